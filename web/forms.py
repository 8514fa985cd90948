"""The start page's form: text fields read by the same models as the API (:mod:`web.schemas`).

A form sends text, so it is read leniently (``"5"`` is 5) where JSON is read strictly. A blank
optional field means its default; the fields that the chosen kind does not take (the form
shows sleep's) are left out. The number of tasks is required: a blank one is an error, not a
default of 50 that nobody asked for. A start time comes from a ``datetime-local`` field
labelled UTC (``start_at_utc``), or as RFC 3339 text (``start_at``); or a delay (``delay_s``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import InvalidInput
from service.faces import plans as plans
from service.task_process.protocol import get_kind
from service.validation import check
from web import schemas

OPTIONS = ("name", "max_attempts", "timeout_s", "memory_limit_mb", "on_complete")


def plan_form(form: Mapping[str, Any]) -> plans.RunPlan:
    """A start-a-run form as a plan.

    Raises:
        InvalidInput: no number of tasks, an unknown kind, or a value the kind's model refuses.
    """
    values = {key: raw.strip() for key, raw in form.items() if isinstance(raw, str) and raw.strip()}
    if "tasks" not in values:
        raise InvalidInput(f"enter how many tasks to run (1 to {plans.MAX_TASKS_PER_RUN:,})")
    kind = values.get("kind", schemas.DEFAULT_KIND)
    get_kind(kind)
    model = schemas.catalog().simulations[kind]
    request = check(model, {k: v for k, v in values.items() if k in model.model_fields}, strict=False)
    options = request.model_dump(include=set(OPTIONS))
    params = request.model_dump(exclude={"tasks", "kind", *OPTIONS, *schemas.START}, exclude_unset=True)
    start = request.model_dump(include=set(schemas.START))
    local = values.get("start_at_utc")
    if local:  # 2026-12-03T14:05 from the browser, in UTC as the field's label says
        start["start_at"] = (local + ":00" if len(local) == 16 else local) + "Z"
    plan = plans.plan_simulation(request.tasks, kind, params, **options)  # type: ignore[attr-defined]
    return plans.with_start(plan, **start)
