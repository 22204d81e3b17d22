"""F6 (material-cost): moving average cost from goods receipts; goods issued to a project → MATERIAL
cost entry + balanced voucher."""
