"""``FrozenDirs`` on mount tables: which directories a tree confined to its write roots cannot
change, through every mount that shows them (the real thing — a bind mount, a symlink swapped
in — is in tests/attacks/test_soft_stable_reads.py)."""

from __future__ import annotations

import os

from capgate._sys import frozen_dirs, spawner
from capgate._sys.frozen_dirs import FrozenDirs, parse_mountinfo

ROOT = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
PROC = "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
DEV = "24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw\n"


def test_a_directory_outside_the_write_roots_is_frozen_one_beneath_them_is_not() -> None:
    frozen = FrozenDirs(["/ws/output", "/dev/null"], PROC + DEV + ROOT)
    assert frozen.frozen("/ws") and frozen.frozen("/ws/src/pkg") and frozen.frozen("/")
    assert not frozen.frozen("/ws/output") and not frozen.frozen("/ws/output/d")
    assert frozen.frozen("/ws/outputs")  # a sibling that only shares the prefix


def test_a_write_root_at_the_top_freezes_nothing() -> None:
    frozen = FrozenDirs(["/"], ROOT)
    assert not frozen.frozen("/") and not frozen.frozen("/usr/lib")


def test_pseudo_file_systems_are_never_frozen() -> None:
    frozen = FrozenDirs(["/ws/output"], PROC + DEV + ROOT)
    assert not frozen.frozen("/proc/1") and not frozen.frozen("/dev/shm") and not frozen.frozen("/sys/fs")
    assert frozen.frozen("/device")  # (a prefix, not the directory)


def test_a_write_root_bind_mounted_elsewhere_makes_its_alias_unfrozen() -> None:
    table = ROOT + "50 27 254:0 /ws/output /mnt/alias rw,relatime - ext4 /dev/vda rw\n"
    frozen = FrozenDirs(["/ws/output"], table)
    assert not frozen.frozen("/mnt/alias") and not frozen.frozen("/mnt/alias/d")
    assert frozen.frozen("/mnt")


def test_a_file_system_mounted_inside_a_write_root_is_writable_wherever_else_it_is_mounted() -> None:
    table = (ROOT + "60 27 8:1 / /ws/output/disk rw - ext4 /dev/sdb rw\n"
             "61 27 8:1 /sub /data rw - ext4 /dev/sdb rw\n")
    frozen = FrozenDirs(["/ws/output"], table)
    assert not frozen.frozen("/data") and not frozen.frozen("/data/x")


def test_another_file_system_mounted_outside_the_write_roots_stays_frozen() -> None:
    table = ROOT + "62 27 8:2 / /srv rw - ext4 /dev/sdc rw\n"
    frozen = FrozenDirs(["/ws/output"], table)
    assert frozen.frozen("/srv/data")


def test_a_subdirectory_of_the_write_root_mounted_read_only_elsewhere_is_still_not_frozen() -> None:
    """Conservative: read-only on that mount, but the tree writes it through the write root."""
    table = ROOT + "70 27 254:0 /ws/output/d /view ro - ext4 /dev/vda rw\n"
    frozen = FrozenDirs(["/ws/output"], table)
    assert not frozen.frozen("/view")


def test_mountinfo_escapes_are_read() -> None:
    table = ROOT + "80 27 254:0 /ws/my\\040out /mnt/a\\134b rw - ext4 /dev/vda rw\n"
    assert parse_mountinfo(table)[1] == ("/mnt/a\\b", "/ws/my out", "254:0")
    frozen = FrozenDirs(["/ws/my out"], table)
    assert not frozen.frozen("/mnt/a\\b/x")


def test_this_machines_mount_table_parses() -> None:
    with open("/proc/self/mountinfo") as fh:
        table = fh.read()
    frozen = FrozenDirs([os.path.realpath("/tmp")], table)
    assert not frozen.frozen(os.path.realpath("/tmp"))


def test_the_stdlib_only_processes_announce_confinement_with_the_same_words() -> None:
    assert (spawner.LANDLOCK_ENV, spawner.LANDLOCK_WRITES) == (frozen_dirs.CONFINED_ENV, frozen_dirs.CONFINED_WRITES)
    with open(os.path.join(os.path.dirname(spawner.__file__), "ns_exec.py")) as fh:
        assert f'env[b"{frozen_dirs.CONFINED_ENV}"] = b"{frozen_dirs.CONFINED_WRITES}"' in fh.read()


def test_an_overlay_with_a_write_root_among_its_layers_is_not_frozen() -> None:
    """Review round 9, finding 3 (the real thing: tests/attacks/test_review_round9_soft_stable.py)."""
    table = ROOT + "119 27 0:41 / /ws/mirror rw - overlay overlay ro,lowerdir=/ws/output:/tmp/empty,redirect_dir=on\n"
    frozen = FrozenDirs(["/ws/output"], table)
    assert not frozen.frozen("/ws/mirror") and not frozen.frozen("/ws/mirror/d")
    assert frozen.frozen("/ws/src")


def test_an_overlay_over_a_bind_of_a_write_root_is_not_frozen() -> None:
    table = (ROOT + "50 27 254:0 /ws/output /mnt/alias rw - ext4 /dev/vda rw\n"
             "119 27 0:41 / /view rw - overlay overlay ro,lowerdir=/mnt/alias/q:/e\n")
    assert not FrozenDirs(["/ws/output"], table).frozen("/view/d")


def test_an_overlay_of_other_directories_stays_frozen_as_does_a_container_root() -> None:
    table = ROOT + "119 27 0:41 / /ws/mirror rw - overlay overlay ro,lowerdir=/ws/lower:/tmp/empty\n"
    assert FrozenDirs(["/ws/output"], table).frozen("/ws/mirror/d")
    docker = ("27 1 0:40 / / rw - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/AB:/var/lib/docker/"
              "overlay2/l/CD,upperdir=/var/lib/docker/overlay2/x/diff,workdir=/var/lib/docker/overlay2/x/work\n")
    frozen = FrozenDirs(["/ws/output"], docker)
    assert frozen.frozen("/ws/src") and not frozen.frozen("/ws/output/x")


def test_a_fuse_file_system_is_never_frozen() -> None:
    table = ROOT + "119 27 0:45 / /mnt/view rw - fuse.bindfs bindfs rw,user_id=0\n"
    frozen = FrozenDirs(["/ws/output"], table)
    assert not frozen.frozen("/mnt/view/d") and frozen.frozen("/mnt")


def test_an_overlay_layer_with_escaped_characters_is_read_as_overlayfs_reads_it() -> None:
    table = ROOT + "119 27 0:41 / /v rw - overlay overlay ro,lowerdir=/e:/ws/out\\134:put\\054x/sub\n"
    assert not FrozenDirs(["/ws/out:put,x"], table).frozen("/v/d")
