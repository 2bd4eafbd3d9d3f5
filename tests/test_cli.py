"""Command-line behaviour that spans targets: warnings and several targets at once."""

from __future__ import annotations

from compiler.cli import main
from tests.helpers import write_policy


def test_unknown_target_block_warns(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "target cisco-as { acl = edge_in }\nallow tcp 22\n")
    assert main(["compile", "policy.wall", "-t", "nftables"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("policy.wall:1:")
    assert "warning: settings for unknown target 'cisco-as' are ignored" in err
    assert "hint: did you mean 'cisco-asa'?" in err


def test_exporter_warnings_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp 22\ndefault drop\n")
    assert main(["compile", "policy.wall", "-t", "ufw", "-o", "out"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err
    assert "before.rules" in err
    assert (tmp_path / "out" / "ufw" / "ufw.sh").exists()


def test_all_targets_stop_on_unsupported(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow icmp echo-request\nallow tcp 22\n")
    assert main(["compile", "policy.wall", "-t", "all", "-o", "out"]) == 1
    err = capsys.readouterr().err
    assert "policy.wall:1:1: error: ufw cannot express" in err
    assert "nothing written" in err
    assert not (tmp_path / "out").exists()


def test_skip_unsupported_writes_the_rest(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow icmp echo-request\nallow tcp 22\n")
    assert main(["compile", "policy.wall", "-t", "all", "-o", "out", "--skip-unsupported"]) == 0
    err = capsys.readouterr().err
    assert "policy.wall:1:1: warning: ufw cannot express" in err
    assert "skipped" in err
    assert "ufw" in err.split("skipped", 1)[1]
    assert (tmp_path / "out" / "nftables" / "ruleset.nft").exists()
    assert (tmp_path / "out" / "iptables" / "rules.v4").exists()
    assert not (tmp_path / "out" / "ufw").exists()
