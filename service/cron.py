"""Cron expressions in a time zone: which instants are a schedule's slots.

Parsing and stepping are cronsim's (a kept library; see the README on why cronsim and not
croniter: cronsim fires a fixed-time job once on the day clocks go back, as Debian's cron does,
where croniter fires it twice, and it refuses an impossible date such as ``0 0 30 2 *`` when the
expression is read rather than when it is first stepped). Zones are the standard ``zoneinfo``,
with the ``tzdata`` package where the system has no zone files.

Every instant out of this module is a *naive UTC* datetime, the form the database stores (an
aware one given in is converted to it); the zone matters only while stepping. Daylight saving
follows Debian's cron:

* a time that does not exist on the day clocks go forward (02:30 in Europe/Berlin on the last
  Sunday of March) fires once, at the first instant after the gap (03:00 local);
* a time that happens twice on the day clocks go back fires once, at its first occurrence;
* expressions that run every hour or more often (``0 * * * *``) fire in each real hour: 23
  times on the short day, 25 on the long one.

Five fields (minute hour day month weekday), or six with seconds first; ``@hourly``,
``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly`` (``@annually``) too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from service.errors import InvalidInput

ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
MAX_EXPRESSION_CHARS = 200
ONE_SECOND = timedelta(seconds=1)


def zone(name: object) -> ZoneInfo:
    """The IANA zone called ``name`` ("Europe/Berlin", "UTC").

    Raises:
        InvalidInput: not a zone this machine knows.
    """
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith("/") or ".." in name:
        raise InvalidInput(f"timezone must be an IANA zone name such as Europe/Berlin or UTC, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"timezone {name!r} is not a time zone this machine knows; use an IANA name "
                           "such as Europe/Berlin, America/New_York or UTC") from None


def to_utc(moment: datetime) -> datetime:
    """An aware datetime as the naive UTC the database stores."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_utc(moment: datetime, tz: ZoneInfo) -> datetime:
    """A stored (naive UTC) instant as an aware time in ``tz`` (an aware one is converted)."""
    return _naive_utc(moment).replace(tzinfo=UTC).astimezone(tz)


def _naive_utc(moment: datetime) -> datetime:
    """The naive UTC form of ``moment``: naive is UTC already; an aware time is converted, not
    relabelled (reading 02:30 CEST as 02:30 UTC would move every slot by the zone's offset)."""
    return moment if moment.tzinfo is None else to_utc(moment)


class Cron:
    """A checked expression in a zone; steps over its slots as naive UTC instants."""

    def __init__(self, expression: object, timezone: object = "UTC") -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise InvalidInput("cron must be a cron expression such as '0 2 * * *' (at 02:00 every day)")
        if len(expression) > MAX_EXPRESSION_CHARS:
            raise InvalidInput(f"cron must be at most {MAX_EXPRESSION_CHARS} characters")
        self.expression = " ".join(expression.split())
        self.fields = ALIASES.get(self.expression.lower(), self.expression)
        self.tz = zone(timezone)
        self.timezone = str(timezone)
        try:
            probe = CronSim(self.fields, datetime(2026, 1, 1, tzinfo=self.tz))
        except CronSimError as exc:
            raise InvalidInput(f"cron {self.expression!r} is not a valid expression: {exc} (five fields: minute "
                               "hour day-of-month month day-of-week, or six with seconds first)") from None
        try:
            next(probe)
        except (StopIteration, CronSimError):
            raise InvalidInput(f"cron {self.expression!r} never fires") from None

    def explain(self) -> str:
        """The expression in words, with its zone: "At 02:00 every day, Europe/Berlin"."""
        try:
            words = CronSim(self.fields, datetime(2026, 1, 1, tzinfo=self.tz)).explain()
        except Exception:  # noqa: BLE001 -- explain() is best effort in cronsim; the expression itself is fine
            words = self.expression
        # cronsim's ordinals read well ("every fifth minute") but for one: "every second second".
        words = words.replace("Every second second", "Every other second")
        return f"{words}, {self.timezone}"

    def _forward(self, after: datetime) -> Iterator[datetime]:
        """Slots strictly after ``after`` (naive UTC), as naive UTC."""
        for local in CronSim(self.fields, from_utc(after, self.tz)):
            yield to_utc(local)

    def after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment``."""
        moment = _naive_utc(moment)
        return next(self._forward(moment.replace(microsecond=0) if moment.microsecond else moment))

    def at_or_after(self, moment: datetime) -> datetime:
        """The first slot at ``moment`` or later."""
        moment = _naive_utc(moment)
        whole = moment.replace(microsecond=0)
        if whole != moment:
            return self.after(whole)
        return self.after(moment - ONE_SECOND)

    def at_or_before(self, moment: datetime, count: int = 1) -> list[datetime]:
        """The last ``count`` slots at ``moment`` or earlier, latest first (fewer if there are none)."""
        found: list[datetime] = []
        start = from_utc(_naive_utc(moment).replace(microsecond=0) + ONE_SECOND, self.tz)
        try:
            for local in CronSim(self.fields, start, reverse=True):
                found.append(to_utc(local))
                if len(found) >= count:
                    break
        except (StopIteration, CronSimError):
            pass
        return found

    def between(self, first: datetime, last: datetime, cap: int) -> tuple[list[datetime], bool]:
        """Slots from ``first`` to ``last`` inclusive, at most ``cap``; and whether more were left off."""
        slots: list[datetime] = []
        first, last = _naive_utc(first), _naive_utc(last)
        for slot in self._forward(first - ONE_SECOND):
            if slot > last:
                return slots, False
            if len(slots) >= cap:
                return slots, True
            slots.append(slot)
        return slots, False

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next ``count`` slots strictly after ``moment``."""
        out: list[datetime] = []
        for slot in self._forward(_naive_utc(moment)):
            out.append(slot)
            if len(out) >= count:
                break
        return out


@lru_cache(maxsize=4096)
def cron(expression: str, timezone: str) -> Cron:
    """A parsed :class:`Cron`, kept: the firing loop steps the same few expressions all day."""
    return Cron(expression, timezone)
