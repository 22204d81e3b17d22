-- Run once by the postgres image when its volume is empty: the report tables the demo's pg-table sinks
-- write into (deploy/compose/pipeline.yaml). The sinks create their own ledger schema (bizbus_ledger), and
-- the sources their state schema (bizbus_state); nothing else is needed.
CREATE TABLE IF NOT EXISTS public.voucher_report (
    effect_id    text NOT NULL,
    voucher_no   text NOT NULL,
    company      text NOT NULL,
    posting_date date NOT NULL,
    currency     text NOT NULL,
    description  text
);
CREATE TABLE IF NOT EXISTS public.cost_center_report (
    effect_id text NOT NULL,
    code      text NOT NULL,
    name      text NOT NULL,
    active    boolean NOT NULL,
    version   bigint NOT NULL
);
