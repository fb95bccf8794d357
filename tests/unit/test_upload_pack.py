"""The tar a workspace upload puts into a remote engine's volume (providers/docker/upload.py):
what Modal's upload holds, members relative to the workspace, owned by root."""

from __future__ import annotations

import os
import tarfile
import tempfile

from reconciler.providers.docker.upload import helper_name, pack, volume_labels


def test_pack_keeps_files_dirs_and_links_and_leaves_out_fifos(tmp_path):
    src = tmp_path / "app"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("x" * 10)
    (src / "top.txt").write_text("y")
    os.symlink("/etc/passwd", src / "out-link")  # the link itself, never what it points to
    os.link(src / "top.txt", src / "hard.txt")
    os.mkfifo(src / "pipe")
    with tempfile.TemporaryFile() as buf:
        files, size = pack(src, buf)
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["d", "d/f.txt", "hard.txt", "out-link", "top.txt"]
    assert members["out-link"].issym() and members["out-link"].linkname == "/etc/passwd"
    assert all((m.uid, m.gid, m.uname) == (0, 0, "root") for m in members.values())
    regular = [m for m in members.values() if m.isreg()]
    assert files == len(regular) == 2 and size == sum(m.size for m in regular) == 11  # one of the hard links is a link


def test_names_and_labels():
    assert helper_name("f", "big-box") == "fleet_f_upload_big-box"
    assert volume_labels("f", "big-box", "ssh://x") == {
        "dev.fleet.project": "f", "dev.fleet.host": "big-box", "dev.fleet.kind": "workspace", "dev.fleet.engine": "ssh://x"}
    assert "dev.fleet.engine" not in volume_labels("f", "big-box", None)
