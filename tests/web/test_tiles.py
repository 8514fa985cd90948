"""The tiles of the status fragment: a running tile's percentage, a failed one's reason, their names.

A tile's accessible name comes from its own text (no aria-label): the parts shown, and visually
hidden words between them. Read here as a screen reader would (leaving out aria-hidden parts), and
as a sighted reader would (leaving out the visually hidden ones too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

from starlette.testclient import TestClient

from service.storage.leases import Lease, Leases
from service.storage.models import Outcome

VOID = {"br", "img", "input", "meta", "link", "hr", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    found.append(child)
                found.extend(child.find_all(tag, cls))
        return found

    def find(self, tag: str | None = None, cls: str | None = None) -> Node | None:
        found = self.find_all(tag, cls)
        return found[0] if found else None

    def texts(self, *, heard: bool = False, seen: bool = False) -> list[str]:
        """The text nodes; ``heard``: without aria-hidden parts; ``seen``: without visually hidden ones."""
        if (heard and self.attrs.get("aria-hidden") == "true") or (seen and "visually-hidden" in self.classes):
            return []
        out: list[str] = []
        for child in self.children:
            out.extend([child] if isinstance(child, str) else child.texts(heard=heard, seen=seen))
        return out

    def text(self, *, heard: bool = False) -> str:
        return "".join(self.texts(heard=heard))

    def shown_and_heard(self) -> list[str]:
        """The pieces of text both on screen and read out, one per text node."""
        return [piece.strip() for piece in self.texts(heard=True, seen=True) if piece.strip()]


class Tree(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {})
        self.stack = [self.root]
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def squeeze(text: str) -> str:
    return " ".join(text.split())


def tiles(client: TestClient, run_id: int) -> dict[int, Node]:
    response = client.get(f"/runs/{run_id}/status")
    assert response.status_code == 200, response.text
    found = {}
    for li in Tree(response.text).root.find_all("li"):
        if li.attrs.get("id", "").startswith("tile-"):
            found[int(li.attrs["id"].removeprefix("tile-"))] = li
    return found


def start(client: TestClient, tasks: int) -> int:
    made = client.post("/api/runs", json={"tasks": tasks, "kind": "sleep", "min_seconds": 60, "max_seconds": 60,
                                          "failure_rate": 0, "transient_rate": 0, "seed": 1})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def claimed(client: TestClient, count: int) -> tuple[Leases, int, list[Lease]]:
    leases = Leases(client.app.state.tenure.engine)  # type: ignore[attr-defined]
    me = leases.register("tiles", 1, None, None)
    return leases, me, leases.claim(me, count)


def summary_of(tile: Node) -> Node:
    summary = tile.find("summary")
    assert summary is not None
    return summary


def test_a_running_tile_shows_its_percentage_and_its_name_says_it(idle_client: TestClient) -> None:
    run_id = start(idle_client, 3)
    leases, me, (first, _) = claimed(idle_client, 2)
    leases.heartbeat(me, [(first.task_id, first.attempt, 0.42, None)])
    shown = tiles(idle_client, run_id)

    running = summary_of(shown[1])
    pct = running.find("span", "pct")
    assert pct is not None and pct.text() == "42%"
    assert squeeze(running.text(heard=True)) == "Task 1: running, attempt 1 of 3, 42% done"
    assert running.shown_and_heard() == ["1", "42%"]  # the icon ▶ is drawn, not read
    assert "aria-label" not in running.attrs, "the name comes from the tile's text, which a label would hide"
    bar = running.find("span", "mini")
    assert bar is not None and bar.attrs.get("aria-hidden") == "true"
    assert summary_of(shown[2]).shown_and_heard() == ["2", "0%"]

    queued = summary_of(shown[3])
    assert queued.find("span", "pct") is None and queued.find("span", "why") is None
    assert squeeze(queued.text(heard=True)) == "Task 3: queued, not started yet, 3 attempts allowed"
    line = queued.find("span", "line")
    assert line is not None and line.text().strip() == ""  # its line is held, empty: tiles keep one height


def test_a_failed_tile_shows_its_reason_on_one_line_and_the_whole_error_is_heard_and_in_the_overlay(
        idle_client: TestClient) -> None:
    run_id = start(idle_client, 4)
    leases, me, (quota, reset, traceback, kept) = claimed(idle_client, 4)
    errors = [
        (quota, "PermanentError: quota exceeded for the nightly batch", None),
        (reset, "TransientError: connection reset while working; a retry resumes", 30.0),
        (traceback, "KeyError: 'path' <b>in</b> a_rather_long_unbroken_word_" + "x" * 200 + "\nline two", None),
    ]
    for lease, error, retry_in_s in errors:
        assert leases.finish(lease, me, outcome=Outcome.FAILED, error=error, retry_in_s=retry_in_s)
    leases.heartbeat(me, [(kept.task_id, kept.attempt, 0.5, None)])
    shown = tiles(idle_client, run_id)

    failed = summary_of(shown[1])
    why = failed.find("span", "why")
    assert why is not None and why.text() == "quota exceeded for the nightly batch"  # tenure's own type left out
    assert squeeze(failed.text(heard=True)) == (
        "Task 1: failed, attempt 1 of 3. PermanentError: quota exceeded for the nightly batch")
    assert failed.shown_and_heard() == ["1", "quota exceeded for the nightly batch"]
    assert failed.find("span", "pct") is None, "a failed tile shows why, not how far it got"
    details = shown[1].find("dl", "more")
    assert details is not None
    err = details.find("dd", "err")
    assert err is not None and err.text() == "PermanentError: quota exceeded for the nightly batch"

    retrying = summary_of(shown[2])
    assert retrying.find("span", "why") is not None
    assert squeeze(retrying.text(heard=True)).startswith("Task 2: retrying, attempt 2 of 3. TransientError: connection")

    other = summary_of(shown[3])
    why = other.find("span", "why")
    assert why is not None and why.text().startswith("KeyError: 'path' <b>in</b>")  # text, not markup
    assert why.text().endswith("\nline two"), "the line holds the whole error; CSS cuts it to one line"
    assert not other.find_all("b")
    assert squeeze(other.text(heard=True)).endswith("x" * 200 + " line two")

    for number, tile in shown.items():
        summary = summary_of(tile)
        assert "aria-label" not in summary.attrs, number
        assert summary.find(cls="tip") is None, "no hover-only tooltip: what it said is on the tile"
        heard = summary.text(heard=True)
        assert squeeze(heard).startswith(f"Task {number}"), heard
        # What is seen is heard, in the same order (axe's label-in-name, WCAG 2.5.3).
        at = 0
        for piece in summary.shown_and_heard():
            at = heard.find(piece, at)
            assert at >= 0, (number, piece, heard)
