"""The interleaved timing harness itself, on workers that time known work."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import arena
import pytest
from arena import Contender, Local

HERE = Path(__file__).parent


def worker(tmp_path: Path, body: str) -> list[str]:
    """A command running `body` as a worker script (arena importable, as in the suite)."""
    script = tmp_path / "worker.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport arena\n"
                      + textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_contenders_take_turns_and_each_gets_every_round(tmp_path: Path) -> None:
    order: list[str] = []
    sleeper = worker(tmp_path, """
        import time
        def prepare(given):
            return (lambda: time.sleep(0.002)), {"layout": given}
        arena.serve({"problems": []}, prepare)
    """)
    remote = Contender("remote", sleeper)
    local = Local("local", lambda: order.append("local"))
    orphan = Contender("orphan", sleeper, same_layout_as="missing")

    arena.run([remote, local, orphan], rounds=5, seconds=0.01)

    assert len(order) == 1 + 5  # one call to warm up, then one per round
    assert len(local.times) == 5
    assert orphan.skip == "missing was not timed" and not orphan.times
    assert remote.checked == {"problems": []} and remote.ready == {"layout": []}
    assert len(remote.times) >= 5 * 3  # 0.01 s blocks of 2 ms calls
    assert min(remote.times) >= 0.002


def test_a_contender_is_given_its_leaders_layout(tmp_path: Path) -> None:
    echo = worker(tmp_path, """
        def prepare(given):
            return (lambda: None), {"layout": {"sessions": 2, "threads": 1} if not given
                                    else {"sessions": int(given[0]), "threads": int(given[1])}}
        arena.serve({}, prepare)
    """)
    leader = Contender("leader", echo)
    follower = Contender("follower", echo, same_layout_as="leader")

    arena.run([leader, follower], rounds=1, seconds=0.0)

    assert follower.ready["layout"] == leader.ready["layout"] == {"sessions": 2, "threads": 1}


def test_a_skipped_contender_is_not_timed(tmp_path: Path) -> None:
    skipping = worker(tmp_path, 'print(\'{"skip": "not installed"}\', flush=True)')
    contender = Contender("peer", skipping)

    arena.run([contender], rounds=3, seconds=0.01)

    assert contender.skip == "not installed" and not contender.times


def test_a_contender_with_wrong_answers_is_not_timed(tmp_path: Path) -> None:
    wrong = worker(tmp_path, """
        arena.serve({"problems": ["top-1 differs from Keras"]},
                    lambda given: ((lambda: None), {"layout": given}))
    """)
    contender = Contender("wrong", wrong)

    arena.run([contender], rounds=3, seconds=0.01)

    assert contender.checked["problems"] and not contender.ready and not contender.times


def test_a_worker_that_dies_is_reported_with_its_error(tmp_path: Path) -> None:
    failing = worker(tmp_path, 'raise SystemExit("cannot load the model")')

    with pytest.raises(RuntimeError, match=r"(?s)broken: its worker ended .*cannot load the model"):
        arena.run([Contender("broken", failing)], rounds=1, seconds=0.0)
