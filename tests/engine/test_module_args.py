"""Module argument validation: pure, no host. Bad arguments are bad input (RoleError, exit 2) with a hint."""

from __future__ import annotations

import pytest

from provisioner.errors import RoleError
from provisioner.modules.base import get_module


@pytest.mark.parametrize(
    "module, args, field, value",
    [
        ("file", {"path": "/x", "mode": "0644"}, "mode", "644"),
        ("file", {"path": "/x", "mode": "644"}, "mode", "644"),
        ("file", {"path": "/x", "mode": 0o644}, "mode", "644"),  # YAML's unquoted 0644
        ("file", {"path": "/x", "mode": "2755"}, "mode", "2755"),
        ("file", {"path": "/x", "mode": 0o1777}, "mode", "1777"),
        ("file", {"path": "/x", "content": 42}, "content", "42"),  # "{{ n }}" renders to a number
        ("line", {"path": "/x", "line": "a", "mode": "0600"}, "mode", "600"),
        ("command", {"argv": ["echo", 1, 2.5]}, "argv", ["echo", "1", "2.5"]),
        ("wait_for", {"argv": ["test", 1]}, "argv", ["test", "1"]),
        ("wait_for", {"port": "6443"}, "port", 6443),
        ("package", {"name": "curl"}, "name", ["curl"]),
        ("sysctl", {"values": {"net.ipv4.ip_forward": True}}, "values", {"net.ipv4.ip_forward": "1"}),
        ("template", {"src": "a.j2", "dest": "/x", "content": "c"}, "path", "/x"),
    ],
)
def test_arguments_are_normalised(module, args, field, value):
    assert get_module(module, "t").validate(args, "t")[field] == value


@pytest.mark.parametrize(
    "module, args, needle",
    [
        ("file", {"path": "/x", "mode": 644}, "file mode 644 is a decimal number (octal 1204)"),
        ("file", {"path": "/x", "mode": "8"}, "invalid file mode '8'"),
        ("file", {"path": "/x", "mode": "rw-r--r--"}, "invalid file mode"),
        ("file", {"path": "/x", "state": "link"}, "file state=link needs src"),
        ("file", {"path": "/x", "state": "gone"}, "'gone' is not one of"),
        ("file", {"path": "/x", "contents": "typo"}, "module 'file' has no argument 'contents'"),
        ("file", {"content": "x"}, "module 'file' needs argument 'path'"),
        ("file", {"path": ["/x"]}, "file.path: expected str, got list"),
        ("line", {"path": "/x"}, "line state=present needs line:"),
        ("line", {"path": "/x", "state": "absent"}, "needs line: or regexp:"),
        ("line", {"path": "/x", "line": "a", "regexp": "(unclosed"}, "invalid regexp"),
        ("line", {"path": "/x", "line": "a", "mode": 755}, "file mode 755 is a decimal number"),
        ("fetch", {"src": "/x", "dest": "/tmp/y", "mode": "0x600"}, "invalid file mode"),
        ("command", {}, "command needs exactly one of argv: or shell:"),
        ("command", {"argv": ["a"], "shell": "b"}, "command needs exactly one of argv: or shell:"),
        ("command", {"shell": "true", "env": {"A;touch /tmp/x": "1"}}, "is not a valid variable name"),
        ("wait_for", {}, "wait_for needs exactly one of port:, argv:, shell:"),
        ("wait_for", {"port": 22, "shell": "true"}, "wait_for needs exactly one of"),
        ("service", {"name": "x", "state": "running"}, "'running' is not one of"),
        ("package", {"name": []}, "package needs at least one name"),
        ("swap", {"state": "on"}, "'on' is not one of"),
    ],
)
def test_bad_arguments_are_bad_input(module, args, needle):
    with pytest.raises(RoleError) as err:
        get_module(module, "roles/r/tasks.yaml[0]").validate(args, "roles/r/tasks.yaml[0]")
    assert err.value.message.startswith("roles/r/tasks.yaml[0]") and needle in err.value.message
    assert err.value.hint
    assert err.value.exit_status == 2
