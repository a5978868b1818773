"""The built-in least-privilege policy, and the lists no user file can switch off.

Each entry says what it stops. Relative roots are relative to the workspace root; ``~`` is
the launching user's home. Deny patterns are gitignore-style: no slash = that name at any
depth, anything else is anchored (``**/`` makes an anchored pattern match at any depth).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_DENY_READ",
    "DEFAULT_DENY_WRITE",
    "DEFAULT_ENV_PASSTHROUGH",
    "DEFAULT_LIMITS",
    "DEFAULT_PORTS",
    "DEFAULT_READ",
    "DEFAULT_WRITE",
    "MANDATORY_DENY_WRITE",
    "POLICY_FILE_NAME",
]

POLICY_FILE_NAME = "agent-permissions.json"

# Read the workspace; nothing else unless the user says so.
DEFAULT_READ: tuple[str, ...] = (".",)
# Write only a results folder and a cache: a prompt-injected agent cannot rewrite sources.
DEFAULT_WRITE: tuple[str, ...] = ("output", ".cache/agent")

DEFAULT_DENY_READ: tuple[str, ...] = (
    "~/.ssh",  # ssh private keys and known_hosts
    "~/.gnupg",  # gpg private keys
    "~/.config",  # tokens of gh, gcloud, pip, etc.
    "~/Library/Keychains",  # macOS keychains
    "~/.aws",  # cloud credentials
    "~/.kube",  # cluster credentials
    "~/.docker/config.json",  # registry credentials
    "~/.netrc",  # HTTP/FTP passwords
    "~/.git-credentials",  # git credential store
    "~/.npmrc",  # npm tokens
    "~/.pypirc",  # PyPI tokens
    ".env*",  # dotenv secrets, at any depth
    "*.pem",  # private keys and certificates with keys
    "*.key",  # private keys
    "*.p12",  # PKCS#12 key bundles
    "*.pfx",  # PKCS#12 key bundles (Windows name)
    "id_rsa*",  # ssh keys copied out of ~/.ssh
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
)

# What the design's example file lists; the mandatory list below already covers it at any
# depth, so these stay as the user-visible defaults.
DEFAULT_DENY_WRITE: tuple[str, ...] = (".git/hooks", ".git/config")

# Files that make the *next human action* run code. Matched at any depth and never
# removable, even with allow_user_expansion: the policy can widen where the agent writes,
# never let it plant code that runs outside the sandbox.
MANDATORY_DENY_WRITE: tuple[str, ...] = (
    ".bashrc",  # next shell
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".profile",
    ".gitconfig",  # aliases, core.pager, core.sshCommand
    ".gitmodules",  # submodule URLs and update commands
    ".envrc",  # direnv runs it on cd
    ".mcp.json",  # MCP servers started by the next agent
    "**/.git/hooks/",  # hooks run on the next commit/checkout
    "**/.git/config",  # core.fsmonitor, core.hooksPath, filters
    "**/.git/modules/**/hooks/",  # submodule hooks
    "**/.git/modules/**/config",
    ".husky/",  # hooks installed through core.hooksPath
    ".pre-commit-config.yaml",  # hooks run by pre-commit
    ".vscode/",  # tasks and settings run by the editor
    ".idea/",
    ".devcontainer/",  # run when the folder is opened
    ".claude/",  # agent settings and hooks
    ".cursor/",
    POLICY_FILE_NAME,  # the agent must not rewrite its own permissions
)

DEFAULT_PORTS: tuple[int, ...] = (443,)
DEFAULT_ENV_PASSTHROUGH: tuple[str, ...] = ("LANG", "LC_ALL", "TERM")

DEFAULT_LIMITS: dict[str, int] = {
    "wallTimeSeconds": 900,
    "cpuSeconds": 600,
    "memoryMb": 2048,
    "maxProcesses": 64,
    "maxOpenFiles": 1024,
    "maxFileSizeMb": 256,
    "outputQuotaMb": 1024,
    "maxCapturedOutputMb": 16,
}
