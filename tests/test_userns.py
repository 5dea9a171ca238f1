"""builder.userns without a namespace: reading /etc/subuid as newuidmap does, and the
map a plan asks for."""

from __future__ import annotations

from pathlib import Path

from builder import userns
from builder.userns import IdRange, Plan


def test_subordinate_ranges_by_name_or_uid_numbered_from_one(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    table.write_text("alice:100000:65536\n"
                     "bob:200000:65536\n"
                     "1000:300000:10\n"      # alice again, by uid
                     "alice:400000:0\n"      # an empty range: ignored
                     "alice:x:5\n"           # not numbers: ignored
                     "# alice:1:1\n"
                     "\n")
    assert userns.subordinate(table, "alice", 1000) == (
        IdRange(1, 100000, 65536), IdRange(65537, 300000, 10))
    assert userns.subordinate(table, "carol", 1002) == ()
    assert userns.subordinate(tmp_path / "missing", "alice", 1000) == ()


def test_a_plan_maps_the_user_to_root_then_its_ranges() -> None:
    ranges = (IdRange(1, 100000, 65536),)
    plan = Plan(1000, 1000, "alice", ranges, ranges, None)
    assert plan.full
    assert userns._map_args(1000, ranges) == ["0", "1000", "1", "1", "100000", "65536"]
    without = Plan(1000, 1000, "alice", (), ranges, None)
    assert not without.full and "usermod --add-subuids" in without.why_single
    helperless = Plan(1000, 1000, "alice", ranges, ranges, "newuidmap")
    assert not helperless.full and "apt-get install uidmap" in helperless.why_single


def test_a_map_of_one_id_is_single() -> None:
    one = userns.IdMap((IdRange(0, 1000, 1),), (IdRange(0, 1000, 1),))
    assert one.single and one.describe() == "uids 0-0 -> 1000-1000; gids 0-0 -> 1000-1000"
    full = userns.IdMap((IdRange(0, 1000, 1), IdRange(1, 100000, 65536)),
                        (IdRange(0, 1000, 1), IdRange(1, 100000, 65536)))
    assert not full.single
