-- Example workflow used by the README tour and `make demo`: ship an order in three
-- steps. Load it with \i examples/orders.sql in a database that has the extension.

create schema if not exists app;

create table if not exists app.stock (
    sku text primary key,
    available integer not null,
    held integer not null default 0
);

create table if not exists app.shipments (
    order_id integer primary key,
    sku text not null,
    label text not null
);

insert into app.stock (sku, available) values ('apple', 10), ('pear', 0)
on conflict (sku) do nothing;

create or replace function app.ship_order(input jsonb) returns jsonb
language plpython3u
as $body$
import hashlib

def make_label(order_id):
    # A Python step: its return value is checkpointed as JSON.
    return "LBL-" + hashlib.sha1(str(order_id).encode()).hexdigest()[:8].upper()

reserved = wf.step(
    "reserve",
    "update app.stock set available = available - 1, held = held + 1"
    " where sku = $1 and available > 0 returning sku, available",
    [input["sku"]],
)
if not reserved:
    return {"status": "out of stock", "sku": input["sku"]}
label = wf.step("label", make_label, input["order_id"])
wf.step(
    "ship",
    "insert into app.shipments (order_id, sku, label) values ($1, $2, $3)",
    [input["order_id"], input["sku"], label],
)
return {"status": "shipped", "label": label, "left": reserved[0]["available"]}
$body$;
