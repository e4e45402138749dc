-- Example used by `make demo`: a flaky external call retried with back-off, a durable
-- timer, and a schedule. Load it after examples/orders.sql.

create table if not exists app.payments (
    order_id integer primary key,
    amount numeric not null,
    settled_at timestamptz not null default now()
);

create sequence if not exists app.gateway_calls;

create or replace function app.charge(input jsonb) returns jsonb
language plpython3u
as $body$
def call_gateway(amount):
    # Stands in for an HTTP call to a payment provider: the first two calls time out.
    calls = plpy.execute("select nextval('app.gateway_calls') as n")[0]["n"]
    if calls <= 2:
        raise ConnectionError(f"payment gateway timed out (call {calls})")
    return {"charged": amount, "gateway_call": calls, "key": wf.step_key}

receipt = wf.step(
    "charge card", call_gateway, input["amount"],
    retry={"max_attempts": 5, "initial_interval": "0.2 seconds"},
)
wf.sleep("1 second")  # wait for the provider to settle the payment
wf.step(
    "record payment",
    "insert into app.payments (order_id, amount) values ($1, $2)",
    [input["order_id"], input["amount"]],
)
return {"receipt": receipt}
$body$;

create or replace function app.report(input jsonb) returns jsonb
language plpython3u
as $body$
rows = wf.step("count", "select count(*) as shipments from app.shipments")
return {"shipments": rows[0]["shipments"], "at": wf.now().isoformat()}
$body$;
