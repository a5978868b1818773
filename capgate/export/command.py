"""``capgate export kubernetes``: load the policy as ``capgate run`` would, build the objects,
write them (and ``ENFORCEMENT.md``) — or refuse with exit 2, writing nothing."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING

from capgate.errors import PolicyError

if TYPE_CHECKING:
    from capgate.policy.sources import Grants

__all__ = ["export_command"]

EXIT_USAGE = 2
YAML_NAME = "kubernetes.yaml"
ENFORCEMENT_NAME = "ENFORCEMENT.md"


def export_command(args: argparse.Namespace, command: Sequence[str], *, grants: Grants | None,
                   environ: Mapping[str, str] | None = None, stdout: IO[str] | None = None,
                   stderr: IO[str] | None = None) -> int:
    from capgate.export.enforcement import enforcement_markdown
    from capgate.export.k8s import kubernetes
    from capgate.export.yaml_text import dump_all
    from capgate.launcher import _load, policy_error_text

    out, err = stdout or sys.stdout, stderr or sys.stderr
    env = os.environ if environ is None else environ
    try:
        effective = _load(args.policy, args.workspace, args.allow_user_expansion, env, grants=grants)
        objects = kubernetes(effective, image=args.image, command=list(command), target=args.target,
                             egress=args.egress, runtime_class=args.runtime_class, name=args.name,
                             namespace=args.namespace, workspace_claim=args.workspace_claim,
                             proxy_address=args.proxy_address, cpus=args.cpus,
                             ttl_seconds_after_finished=args.ttl, warm_pool=args.warm_pool)
    except PolicyError as exc:
        err.write(policy_error_text(exc))
        return EXIT_USAGE
    text = dump_all(objects)
    table = enforcement_markdown(egress=args.egress, target=args.target)
    if effective.process.allowed_commands:
        err.write("capgate: warning: the pod runs the soft backend: an allowed native command ("
                  f"{effective.process.allowed_commands[0]}, ...) can read files matching denyRead inside the read "
                  "roots (Landlock cannot carve patterns out of a root); keep secrets out of the image and the "
                  "workspace claim (ENFORCEMENT.md)\n")
    for widened, source in effective.widened:
        err.write(f"capgate: exported widening {widened} (from {source})\n")
    if args.output == "-":
        out.write(text)
        err.write("capgate: ENFORCEMENT.md not written (-o -): `-o DIR` writes it beside the YAML; "
                  "docs/kubernetes.md has the same table\n")
        return 0
    try:
        os.makedirs(args.output, exist_ok=True)
        for name, body in ((YAML_NAME, text), (ENFORCEMENT_NAME, table)):
            path = os.path.join(args.output, name)
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (
                os.O_TRUNC if args.force else os.O_EXCL)
            fd = os.open(path, flags, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
    except FileExistsError as exc:
        err.write(f"capgate: {exc.filename} exists; --force overwrites it\n")
        return EXIT_USAGE
    except OSError as exc:
        err.write(f"capgate: cannot write {exc.filename or args.output}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    err.write(f"capgate: wrote {len(objects)} objects to {os.path.join(args.output, YAML_NAME)} and "
              f"{os.path.join(args.output, ENFORCEMENT_NAME)}\n")
    return 0
