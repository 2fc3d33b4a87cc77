"""A dbt project of thousands of generated models, for run_results at a large project's scale.

The packer's limits only bite on large projects, and what decides them is how well compiled SQL
compresses: random text compresses far worse than real SQL, one template repeated far better.
So the models here are written like a warehouse's: CTEs, a join, CASE aggregations whose column
names and shapes vary per model (from a seeded vocabulary), a few KB each. Every model reads one
model of the layer before and one staging model, so a failed model skips a subtree, as in a real
DAG.

Most models are views, which DuckDB creates fastest (`dbt build --threads 1`: about 35 ms a
model on two cores; more threads only contend for the GIL). Every `fail_every`-th model of the
second layer is a table that casts the `fault_switch` seed's flag to an integer: while the flag is
a sentence the model fails in the database with a long message, and after `fix_fault` and
`dbt seed` it succeeds, so `dbt retry` resumes it and the models it skipped, with the same parse.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from tests.unit.dbt_runs import PROJECT

# Column and comment vocabulary of the generated models.
_WORDS = [
    "account", "active", "adjusted", "amount", "annual", "balance", "basket", "billing",
    "campaign", "cancelled", "cart", "channel", "churn", "cohort", "completed", "cost", "coupon",
    "credit", "customer", "daily", "debit", "delivery", "discount", "dispute", "first", "fiscal",
    "gross", "invoice", "item", "last", "lifetime", "loyalty", "margin", "monthly", "net", "new",
    "open", "order", "paid", "partner", "payment", "pending", "placed", "priority", "promo",
    "quarter", "refund", "region", "repeat", "return", "revenue", "sales", "segment", "shipped",
    "shipping", "store", "subscription", "tax", "tier", "total", "trial", "unit", "upgrade",
    "vendor", "voucher", "warehouse", "weekly",
]  # fmt: skip
_STAGING = {
    "stg_orders": ("status", ("placed", "shipped", "completed", "return_pending", "returned")),
    "stg_payments": ("payment_method", ("credit_card", "coupon", "bank_transfer", "gift_card")),
}
_AGGREGATES = ("sum({x})", "max({x})", "count(distinct case when {c} then order_id end)")
_MEASURES = ("amount", "amount * 0.9", "round(amount, 2)", "1", "amount - amount * 0.2")

_PROJECT_YML = """\
name: scaled
version: "1.0.0"
config-version: 2
profile: jaffle_shop
model-paths: ["models"]
seed-paths: ["seeds"]
flags:
  send_anonymous_usage_stats: false
  use_colors: false
models:
  scaled:
    +materialized: view
"""

_FAULT_ON = (
    "the upstream export for this batch arrived without its amounts so every model that "
    "reconciles payments stops here until the loader reruns (scaled project fault switch)"
)

_STAGING_SQL = {
    "stg_orders": "select id as order_id, user_id as customer_id, order_date, status\n"
    "from {{ ref('raw_orders') }}\n",
    "stg_payments": "select id as payment_id, order_id, payment_method,\n"
    "    cast(amount as numeric(12, 2)) / 100 as amount\nfrom {{ ref('raw_payments') }}\n",
}


def model_name(layer: int, index: int) -> str:
    """The name of the index-th model of a layer."""
    return f"l{layer}_m{index:05d}"


def _name(rng: random.Random, *parts: object) -> str:
    return "_".join([*rng.sample(_WORDS, rng.randint(2, 3)), *map(str, parts)])


def model_sql(rng: random.Random, parent: str, *, failing: bool = False) -> str:
    """One model: its parent's order columns enriched with metrics of a staging model."""
    staging = rng.choice(sorted(_STAGING))
    column, values = _STAGING[staging]
    metrics = []
    for _ in range(rng.randint(8, 30)):
        value = rng.choice(values)
        condition = f"{column} = '{value}'"
        measure = rng.choice(_MEASURES) if staging == "stg_payments" else "1"
        expression = rng.choice(_AGGREGATES).format(
            x=f"case when {condition} then {measure} else 0 end", c=condition
        )
        metrics.append((expression, _name(rng, value)))
    metric_lines = ",\n".join(f"        {e} as {n}" for e, n in metrics)
    kept = rng.sample(metrics, min(len(metrics), rng.randint(3, 10)))
    rollup = ",\n".join(f"        coalesce(metrics.{n}, 0) as {_name(rng)}" for _, n in kept)
    cutoff = f"2024-0{rng.randint(1, 4)}-{rng.randint(10, 28)}"
    config, fault = "", ""
    if failing:
        config = "{{ config(materialized='table') }}\n"
        fault = (
            ",\n    cast((select flag from {{ ref('fault_switch') }}) as integer) as fault_check"
        )
    return f"""{config}-- {" ".join(rng.sample(_WORDS, 8))}
with parent as (
    select * from {{{{ ref('{parent}') }}}}
),

metrics as (
    select
        order_id,
{metric_lines}
    from {{{{ ref('{staging}') }}}}
    group by order_id
),

enriched as (
    select
        parent.order_id,
        parent.customer_id,
        parent.order_date,
        parent.status,
{rollup},
        case
            when parent.status in ('returned', 'return_pending') then '{rng.choice(_WORDS)}'
            when parent.order_date < date '{cutoff}' then '{rng.choice(_WORDS)}'
            else '{rng.choice(_WORDS)}'
        end as {_name(rng)}
    from parent
    left join metrics
        on parent.order_id = metrics.order_id
    where parent.order_id is not null
)

select order_id, customer_id, order_date, status{fault}
from enriched
"""


def generate(root: Path, *, models: int, layers: int = 6, fail_every: int = 0) -> Path:
    """Write the project under root; every `fail_every`-th model of layer 2 can be made to fail."""
    rng = random.Random(models)
    shutil.copytree(PROJECT / "seeds", root / "seeds")
    shutil.copytree(PROJECT / "profiles", root / "profiles")
    (root / "dbt_project.yml").write_text(_PROJECT_YML)
    (root / "seeds" / "fault_switch.csv").write_text(f"flag\n{_FAULT_ON}\n")
    staging_dir = root / "models" / "staging"
    staging_dir.mkdir(parents=True)
    for name, sql in _STAGING_SQL.items():
        (staging_dir / f"{name}.sql").write_text(sql)
    per_layer = models // layers
    for layer in range(1, layers + 1):
        layer_dir = root / "models" / f"layer_{layer}"
        layer_dir.mkdir()
        for index in range(per_layer):
            parent = "stg_orders" if layer == 1 else model_name(layer - 1, rng.randrange(per_layer))
            failing = layer == 2 and fail_every > 0 and index % fail_every == 0
            sql = model_sql(rng, parent, failing=failing)
            (layer_dir / f"{model_name(layer, index)}.sql").write_text(sql)
    return root


def fix_fault(root: Path) -> None:
    """Turn the fault switch off; `dbt seed --select fault_switch` loads it into the warehouse."""
    (root / "seeds" / "fault_switch.csv").write_text("flag\n0\n")


def _compiled(sql: str) -> str:
    """The SQL as dbt compiles it for DuckDB: refs become relation names."""
    return re.sub(r"\{\{ ref\('(\w+)'\) \}\}", r'"warehouse"."main"."\1"', sql)


def _result(rng: random.Random, index: int) -> dict[str, Any]:
    """One result in the shape dbt 1.11 writes for a model: mostly successes, some errors (with
    dbt's long message) and the nodes they skipped."""
    name = model_name(1 + index % 6, index)
    status = "error" if index % 211 == 0 else "skipped" if index % 211 in (1, 2) else "success"
    ran = status != "skipped"
    second = f"{index % 60:02d}"
    timing = [
        {
            "name": step,
            "started_at": f"2026-11-23T03:{second}:00.{rng.randrange(10**6):06d}Z",
            "completed_at": f"2026-11-23T03:{second}:01.{rng.randrange(10**6):06d}Z",
        }
        for step in ("compile", "execute")
    ]
    message = {
        "success": "OK",
        "skipped": None,
        "error": f"Runtime Error in model {name} (models/{name}.sql)\n  Conversion Error: "
        f"Could not convert string '{_FAULT_ON}' to INT32",
    }[status]
    return {
        "status": status,
        "timing": timing if ran else [],
        "thread_id": f"Thread-{1 + index % 4} (worker)",
        "execution_time": rng.random() * 3 if ran else 0,
        "adapter_response": {"_message": "OK"} if status == "success" else {},
        "message": message,
        "failures": None,
        "unique_id": f"model.scaled.{name}",
        "compiled": ran,
        "compiled_code": _compiled(model_sql(rng, "stg_orders")) if ran else None,
        "relation_name": f'"warehouse"."main"."{name}"',
        "batch_results": None,
    }


def write_run_results(path: Path, *, size: int) -> int:
    """Write a run_results.json of at least `size` bytes, result by result; returns its count.

    For memory tests that need more than a `dbt build` can produce in a test's time: the results
    have the fields dbt writes and compiled SQL from `model_sql`, so they compress as a large
    project's do. dbt's loader reads the packed file back in the tests that use it.
    """
    rng = random.Random(size)
    head = {
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
            "dbt_version": "synthetic",
            "generated_at": "2026-11-23T03:00:00.000000Z",
            "invocation_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "env": {},
        }
    }
    count = 0
    with path.open("w") as out:
        out.write(json.dumps(head)[:-1] + ', "results": [')
        while out.tell() < size:
            out.write((", " if count else "") + json.dumps(_result(rng, count)))
            count += 1
        out.write('], "elapsed_time": 3600.0, "args": {"which": "build", "threads": 4}}')
    return count
