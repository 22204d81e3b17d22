"""F7 (budget-control): running cost per project (labor + material + committed purchases) against its
budget → budget alerts and payment-freeze commands, one of each per crossing."""
