"""The user policy file, ``agent-permissions.json``, as a strict pydantic schema.

This is the *only* definition of the user config. The file is hostile input: unknown keys
at any depth are refused, types are never coerced (``"256"`` is not a number, ``"true"`` is
not a boolean, a number is not a path), empty strings and NUL bytes are refused. Every key is
optional; ``None`` means "not given, keep the built-in default". Canonicalization (absolute,
symlink-resolved paths; normalized hosts) happens later, in ``load``/``merge``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

__all__ = [
    "CredentialEntry",
    "DeniedDomain",
    "FilesystemSection",
    "LimitsSection",
    "NetworkSection",
    "PolicyFile",
    "ProcessSection",
    "RequestRuleEntry",
]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


def _no_control(value: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _no_negation(value: str) -> str:
    # A deny list only ever adds denials; "!pattern" would re-allow what a default denies.
    if value.startswith("!"):
        raise ValueError("negated patterns ('!…') are not allowed in deny lists")
    return value


PathEntry = Annotated[StrictStr, Field(min_length=1, max_length=4096), AfterValidator(_no_nul)]
PatternEntry = Annotated[PathEntry, AfterValidator(_no_negation)]
HostEntry = Annotated[StrictStr, Field(min_length=1, max_length=300), AfterValidator(_no_control)]
NameEntry = Annotated[StrictStr, Field(min_length=1, max_length=255), AfterValidator(_no_control)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Positive = Annotated[StrictInt, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=False, str_strip_whitespace=False
    )


class FilesystemSection(_Strict):
    read: list[PathEntry] | None = Field(None, description="Roots the agent may read.")
    write: list[PathEntry] | None = Field(None, description="Roots the agent may write.")
    deny_read: list[PatternEntry] | None = Field(
        None, alias="denyRead", description="gitignore patterns; added to the defaults."
    )
    deny_write: list[PatternEntry] | None = Field(
        None, alias="denyWrite", description="gitignore patterns; added to the defaults."
    )
    recursive_delete: list[PathEntry] | None = Field(
        None,
        alias="recursiveDelete",
        description="Roots beneath which fs.rmtree is allowed (also needs write). Default none.",
    )


class DeniedDomain(_Strict):
    domain: HostEntry
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500), AfterValidator(_no_control)]


def _token(value: str) -> str:
    # An HTTP field name / method: RFC 9110 "token" characters only (no header injection).
    if not value or any(not (ch.isascii() and (ch.isalnum() or ch in "!#$%&'*+-.^_`|~")) for ch in value):
        raise ValueError("must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)")
    return value


def _env_name(value: str) -> str:
    if not (value[0].isalpha() or value[0] == "_") or not all(ch.isascii() and (ch.isalnum() or ch == "_")
                                                              for ch in value):
        raise ValueError("must be an environment variable name (letters, digits, _)")
    return value


TokenEntry = Annotated[StrictStr, Field(min_length=1, max_length=100), AfterValidator(_token)]
EnvName = Annotated[StrictStr, Field(min_length=1, max_length=255), AfterValidator(_env_name)]


class CredentialEntry(_Strict):
    """A secret the proxy injects; only the user-level file (and ``--credential``) may hold one."""

    host: HostEntry = Field(description="Exact host name, optional :port (443 by default).")
    header: TokenEntry = Field(description="The request header in which the placeholder is replaced.")
    secret: Annotated[StrictStr, Field(min_length=5, max_length=4096), AfterValidator(_no_nul)] = Field(
        description="env:NAME (the launcher's environment) or file:PATH (not group/world-readable).")
    child_env: EnvName = Field(alias="childEnv", description="The child's variable holding the placeholder.")


class RequestRuleEntry(_Strict):
    """Allowed methods and path globs on one (inspected) host; rules only narrow."""

    host: HostEntry
    methods: list[TokenEntry] | None = None
    paths: list[Annotated[StrictStr, Field(min_length=1, max_length=1000), AfterValidator(_no_control)]] | None = None


class NetworkSection(_Strict):
    enabled: StrictBool | None = None
    allowed_domains: list[HostEntry] | None = Field(None, alias="allowedDomains")
    denied_domains: list[HostEntry | DeniedDomain] | None = Field(None, alias="deniedDomains")
    allowed_addresses: list[HostEntry] | None = Field(None, alias="allowedAddresses")
    allowed_ports: list[Port] | None = Field(None, alias="allowedPorts")
    allowed_unix_sockets: list[PathEntry] | None = Field(None, alias="allowedUnixSockets")
    credentials: list[CredentialEntry] | None = None
    request_rules: list[RequestRuleEntry] | None = Field(None, alias="requestRules")
    end_run_on_credential_misuse: StrictBool | None = Field(None, alias="endRunOnCredentialMisuse")


class ProcessSection(_Strict):
    allowed_commands: list[PathEntry] | None = Field(None, alias="allowedCommands")
    allow_shell: StrictBool | None = Field(None, alias="allowShell")
    env_passthrough: list[NameEntry] | None = Field(None, alias="envPassthrough")
    denied_arguments: dict[NameEntry, list[Annotated[PathEntry, Field(max_length=1000)]]] | None = (
        Field(
            None,
            alias="deniedArguments",
            description="Per command (name), fnmatch patterns an argument may not match.",
        )
    )


class LimitsSection(_Strict):
    wall_time_seconds: Positive | None = Field(None, alias="wallTimeSeconds")
    cpu_seconds: Positive | None = Field(None, alias="cpuSeconds")
    memory_mb: Positive | None = Field(None, alias="memoryMb")
    max_processes: Positive | None = Field(None, alias="maxProcesses")
    max_open_files: Positive | None = Field(None, alias="maxOpenFiles")
    max_file_size_mb: Positive | None = Field(None, alias="maxFileSizeMb")
    output_quota_mb: Positive | None = Field(None, alias="outputQuotaMb")
    max_captured_output_mb: Positive | None = Field(None, alias="maxCapturedOutputMb")


def _version_one(value: int) -> int:
    if value != 1:
        raise ValueError("must be 1 (the only policy format version)")
    return value


POLICY_VERSION = 1


class PolicyFile(_Strict):
    # StrictInt first: Literal[1] alone accepts ``true`` and ``1.0`` (they compare equal to 1).
    # Optional like every key (absent means 1), so a plain ``{"network": {...}}`` or an
    # srt-style file loads; any value other than the integer 1 is refused, naming the key.
    version: Annotated[StrictInt, AfterValidator(_version_one)] = POLICY_VERSION
    filesystem: FilesystemSection | None = None
    network: NetworkSection | None = None
    process: ProcessSection | None = None
    limits: LimitsSection | None = None
