"""Close Thespian's TCP transport to the network: loopback listeners and authenticated frames.

Stock Thespian 4.0.1 (``multiprocTCPBase``) binds the admin and every actor to all interfaces,
trusts the length prefix of every frame and hands every frame that arrives to
:func:`pickle.loads`, so anyone who can open a TCP connection to any of its ports runs code as
the node's user, or ends an actor with one malformed prefix. This module hardens the TCP
transport, process-wide and in place, in two ways:

1. **Where it listens.** Every listening socket binds to :attr:`TransportSecurity.bind_host`
   (``127.0.0.1`` by default) instead of all interfaces, and the address the node advertises
   to others is made to match (``THESPIAN_BASE_IPADDR``), so the admin and the actors stay
   reachable. Listening on another interface is an explicit choice (multi-host conventions).
2. **What it reads.** Every frame carries HMAC-SHA256 tags made with the node secret, over
   its announced length and over its body. The receive path (:mod:`genagent_thespian._os.frames`,
   which also gives the frame layout) checks the length prefix, then the header tag, then the
   body tag, each before it reads or buffers further: nothing an unauthenticated peer sends
   reaches Thespian's parser, more than a few dozen bytes of buffer, or :func:`pickle.loads`.
   A frame that fails closes its connection unanswered and is logged (peer and reason only, at
   most once per peer per minute) to Thespian's internal log (``THESPLOG_FILE``); the process
   keeps serving. Frames are bounded by :attr:`TransportLimits.max_frame_bytes` (64 MiB).

What this protects against: any process or host without the secret (other local users,
containers sharing the host network, hosts on the LAN) can neither run code through pickle,
nor deliver a message, nor end or wedge a process with a malformed frame; frames of another
convention (another secret) are rejected; with the default bind nothing is reachable from off
the host at all. What it does not protect against: anyone who can read the secret (the node's
own user, root); an observer on the network of a multi-host convention (frames are
authenticated, not encrypted, and a captured frame can be replayed to a node of the same
convention). Run multi-host conventions over a private network or an encrypted tunnel
(WireGuard, IPsec, SSH) when the network is not trusted.

Thespian internals replaced by :func:`install_transport_security` (all verified when this
module is imported; a Thespian other than 4.0.1 raises :class:`UnsupportedThespianVersion`):

* ``thespian.system.transport.TCPTransport.serializer`` -- the module global (``pickle``) the
  TCP transport calls for every frame it sends (``serializer.dumps``). It becomes a
  :class:`~genagent_thespian._os.frames.FrameCodec`, whose ``dumps`` adds the tags and refuses a
  frame over ``max_frame_bytes`` with :class:`~genagent_thespian.MessageTooLarge`.
* ``thespian.system.transport.TCPTransport.ReceiveBuffer`` -- the class every incoming frame,
  acknowledgement and reply is read into. It becomes
  :class:`~genagent_thespian._os.frames.FrameReceiver`, which checks each piece of a frame before
  it asks for the next and never raises: a refused frame completes as ``None``, which
  Thespian's transmit path already treats as a corrupted acknowledgement (retry, then fail).
* ``TCPTransport.TCPTransport._handleReadableIncoming`` -- Thespian's read step for incoming
  connections, **bypassed**: it passed the unchecked length to ``recv`` (a negative one raised
  ``ValueError`` out of the actor's loop) and acknowledged refused frames.
  :func:`~genagent_thespian._os.frames.handle_readable_incoming` reads only what the receiver asks
  for, closes a refused connection without a reply and logs it, rate-limited.
* ``TCPTransport.TCPTransport._acceptNewIncoming`` -- wrapped by
  :func:`~genagent_thespian._os.frames.accept_new_incoming`: after Thespian accepts a
  connection, it gets a short deadline to authenticate, and a peer's (and all peers')
  unauthenticated connections are capped, the oldest closed first
  (:class:`TransportLimits`).
* ``thespian.system.transport.TCPTransport.ackMsg`` / ``ackDataErrMsg`` -- the acknowledgement
  frames, built once at Thespian's import with plain pickle; rebuilt with the codec.
* ``thespian.system.transport.IPBase.TCPv4ActorAddress.bindArgs`` -- the address every TCP
  listening socket binds (``TCPTransport.__init__``) and the admin probe uses
  (``TCPTransport.probeAdmin``). Thespian returns ``('', port)`` (all interfaces); the
  override substitutes :attr:`TransportSecurity.bind_host`.
* ``thespian.system.transport.TCPTransport.selectors`` -- the module global the transport
  builds a selector from on every pass of its loop: poll instead of a new epoll instance
  each time (a speed-up, not a protection; see :mod:`~genagent_thespian._os.poll_selector`).
* ``thespian.system.multiprocCommon.startAdmin`` -- the admin's new process first releases the
  sockets and pipes it inherited from the program that started it (see
  :mod:`~genagent_thespian._os.admin_start`).
* ``THESPIAN_BASE_IPADDR`` (a documented Thespian setting) -- the address advertised in actor
  addresses, set to the bind host so that peers connect where the node listens.

The patch must be installed in the process that creates the ``ActorSystem`` *before* it
creates it (the admin is forked from that process and every actor from the admin or another
actor, so they all inherit it; ``'Process Startup Method'`` must stay ``'fork'``, see
:func:`check_capabilities`), and in every process that attaches to a running system as a
client. Only the TCP transport is covered; the UDP and Queue bases are not supported.

Typical use in a node starter (a client does the same with the node's *bind_host*)::

    security = harden_transport()                   # or harden_transport(bind_host="10.0.0.11")
    capabilities = {"Admin Port": 1900}
    check_capabilities(capabilities, security)
    asys = ActorSystem("multiprocTCPBase", capabilities)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hmac
import importlib.metadata
import ipaddress
import os
import pickle
import secrets
import selectors
import stat
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from thespian.system import multiprocCommon
from thespian.system.transport import IPBase, TCPTransport, errmgmt, streamBuffer

from .._core.errors import GenAgentError
from .._core.types import ActorAddress, Options, OptionValue, ThespianInternal
from .admin_start import install_admin_start
from .frames import (
    FrameCodec,
    FrameReceiver,
    TransportLimits,
    accept_new_incoming,
    handle_readable_incoming,
)
from .poll_selector import POLL_SELECTORS, install_poll_selector
from .private import private_file, private_folder
from .shutdown_guard import install_shutdown_guard
from .state import state_folder

__all__ = [
    "SECRET_ENV",
    "SECRET_FILE_ENV",
    "SECRET_FILE_NAME",
    "SecurityConfigError",
    "TransportLimits",
    "TransportSecurity",
    "UnsupportedThespianVersion",
    "check_capabilities",
    "harden_transport",
    "install_transport_security",
    "installed_transport_security",
    "load_or_create_secret",
    "secret_file",
]

#: Environment variable holding the node secret as hex; overrides the secret file.
SECRET_ENV = "GENAGENT_SECRET"
#: Environment variable naming the secret file.
SECRET_FILE_ENV = "GENAGENT_SECRET_FILE"
#: The secret file's name in a node's home, used when neither environment variable is set.
SECRET_FILE_NAME = "node.secret"

_SECRET_BYTES = 32
_MIN_SECRET_BYTES = 16
_LOOPBACK = "127.0.0.1"
_WILDCARD = "0.0.0.0"
_BASE_IPADDR_ENV = "THESPIAN_BASE_IPADDR"
_SUPPORTED_THESPIAN = "4.0.1"


class SecurityConfigError(GenAgentError, ValueError):
    """The node secret or the transport security settings are unusable.

    Raised for a missing, malformed or group/world-readable secret, an invalid bind address,
    or a second installation with different settings. The message names the file or the
    setting, never the secret.
    """

    reason_kind = "security_config"


class UnsupportedThespianVersion(GenAgentError, RuntimeError):
    """The installed Thespian is not the 4.0.1 whose internals the hardening wraps."""

    reason_kind = "unsupported_thespian"


# -- the node secret ---------------------------------------------------------------------------


def load_or_create_secret(
    path: str | os.PathLike[str] | None = None,
) -> bytes:
    """Return this node's secret, creating a random one on first use.

    Lookup order: ``$GENAGENT_SECRET`` (hex) if set; else the file *path*, else
    ``$GENAGENT_SECRET_FILE``, else ``node.secret`` in the default node's home
    (``$XDG_STATE_HOME/genagent-thespian/default/``, beside its store), so a script's reruns,
    the ``genagent`` commands and every node of this user (whatever its name: the nodes of
    a convention share one secret) agree on it with no option. The file holds
    the secret as one line of hex, so it can be copied to the other hosts of a convention. A
    missing file is created atomically (a private temporary file hard-linked into place, so
    concurrent starters agree on one secret) with mode 0600 in a directory created with mode
    0700.

    Args:
        path: Secret file to use instead of the environment/default location.

    Returns:
        The secret bytes (at least 16, 32 when generated).

    Raises:
        SecurityConfigError: The hex is malformed or too short, the file is not a regular
            file owned by this user, it is readable or writable by group or others, or it
            cannot be read or created.
    """
    from_env = os.environ.get(SECRET_ENV, "").strip()
    if from_env:
        return _parse_secret(from_env, source=f"${SECRET_ENV}")
    secret_path = secret_file(path)
    try:
        return _read_secret_file(secret_path)
    except FileNotFoundError:
        pass
    _create_secret_file(secret_path)
    try:
        return _read_secret_file(secret_path)
    except FileNotFoundError as exc:
        raise SecurityConfigError(
            f"node secret file {secret_path} vanished after creation"
        ) from exc


def secret_file(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the file :func:`load_or_create_secret` reads (when ``$GENAGENT_SECRET`` is unset).

    *path* if given, else ``$GENAGENT_SECRET_FILE``, else ``node.secret`` in the default
    node's home.
    """
    chosen = path or os.environ.get(SECRET_FILE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    return state_folder("default") / SECRET_FILE_NAME


def _parse_secret(text: str, *, source: str) -> bytes:
    """Decode a hex secret and check its length; the error never quotes the text (it is the
    secret).
    """
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        # The offending text is deliberately left out: it is (almost) the secret.
        raise SecurityConfigError(f"node secret from {source} is not valid hex") from None
    if len(secret) < _MIN_SECRET_BYTES:
        raise SecurityConfigError(
            f"node secret from {source} is {len(secret)} bytes; at least "
            f"{_MIN_SECRET_BYTES} are required ({_SECRET_BYTES} recommended)"
        )
    return secret


def _read_secret_file(path: Path) -> bytes:
    """Read the secret file, refusing anything an attacker could have planted or read.

    The file is opened without following symlinks, then checked on the open descriptor (no race
    between check and read): a regular file, owned by this user, with no group or other permission
    bits.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecurityConfigError(
            f"cannot open node secret file {path}: {exc.strerror} (symlinks are refused)"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecurityConfigError(f"node secret file {path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise SecurityConfigError(
                f"node secret file {path} is owned by uid {info.st_uid}, not by this user "
                f"(uid {os.geteuid()})"
            )
        if info.st_mode & 0o077:
            raise SecurityConfigError(
                f"node secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be "
                f"readable by its owner only (chmod 600 {path})"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(4096)
    finally:
        os.close(fd)
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SecurityConfigError(f"node secret file {path} is not hex text") from None
    return _parse_secret(text, source=str(path))


def _create_secret_file(path: Path) -> None:
    """Create the secret file atomically, with mode 0600 from the start.

    The secret is written and synced to a temporary name, then hard-linked into place: a reader
    never sees a half-written file, and when two nodes start together the first file wins and both
    use it.
    """
    try:
        private_folder(path.parent)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(_SECRET_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)  # never replaces: a concurrent creator's file wins
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise SecurityConfigError(
            f"cannot create node secret file {path}: {exc.strerror}"
        ) from None


# -- settings ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class TransportSecurity:
    """How this process's Thespian TCP transport listens and authenticates frames.

    Args:
        secret: The node secret shared by every process of the system and every host of the
            convention (see :func:`load_or_create_secret`). Never shown in reprs or errors.
        bind_host: IPv4 address every listening socket binds. ``127.0.0.1`` (default) keeps
            the node on this host; a host's own address, or ``0.0.0.0`` for all interfaces,
            lets other hosts of a convention reach it.
        advertise_host: Address other processes are told to connect to. Defaults to
            *bind_host*; only needed with ``bind_host="0.0.0.0"`` (otherwise Thespian guesses
            it from the route to the convention leader), and must equal *bind_host* when that
            is a specific address.
        limits: Frame size and connection limits (:class:`TransportLimits`; its defaults
            read ``$GENAGENT_MAX_FRAME_BYTES``).

    Raises:
        SecurityConfigError: The secret is too short or an address is not usable.

    Example:
        >>> sec = TransportSecurity(b"k" * 32, limits=TransportLimits(max_frame_bytes=2**20))
        >>> sec.advertise_host, sec.limits.max_frame_bytes
        ('127.0.0.1', 1048576)
    """

    secret: bytes
    bind_host: str = _LOOPBACK
    advertise_host: str | None = None
    limits: TransportLimits = dataclasses.field(default_factory=TransportLimits)

    def __post_init__(self) -> None:
        """Check the settings; the advertised address defaults to the bound one.

        An advertised address that differs from a specific bound address, or is ``0.0.0.0``, would
        give peers an address they cannot reach; both are refused here rather than discovered as
        timeouts between nodes.
        """
        if not isinstance(self.secret, bytes) or len(self.secret) < _MIN_SECRET_BYTES:
            raise SecurityConfigError(f"the node secret must be at least {_MIN_SECRET_BYTES} bytes")
        if not isinstance(self.limits, TransportLimits):
            raise SecurityConfigError(
                f"limits must be a TransportLimits, got {type(self.limits).__name__}"
            )
        bind = _ipv4("bind_host", self.bind_host)
        if self.advertise_host is None:
            if not bind.is_unspecified:
                object.__setattr__(self, "advertise_host", self.bind_host)
            return
        advertise = _ipv4("advertise_host", self.advertise_host)
        if advertise.is_unspecified:
            raise SecurityConfigError(
                "advertise_host cannot be 0.0.0.0: peers cannot connect to it"
            )
        if not bind.is_unspecified and advertise != bind:
            raise SecurityConfigError(
                f"advertise_host {self.advertise_host} differs from bind_host {self.bind_host}: "
                "peers would connect to an address the node does not listen on"
            )

    @property
    def loopback_only(self) -> bool:
        """Whether the node listens on the loopback interface only."""
        return ipaddress.IPv4Address(self.bind_host).is_loopback

    def __repr__(self) -> str:
        """Show the settings with the secret masked: this object is logged and shown in errors."""
        return (
            f"TransportSecurity(secret=<masked>, bind_host={self.bind_host!r}, "
            f"advertise_host={self.advertise_host!r}, limits={self.limits!r})"
        )

    def __reduce__(self) -> NoReturn:
        """Refuse to pickle: Thespian pickles capabilities into messages that cross hosts."""
        raise TypeError("TransportSecurity holds the node secret and must not be pickled")

    def _same_settings(self, other: TransportSecurity) -> bool:
        """Whether two settings are the same, comparing secrets in constant time."""
        return (
            hmac.compare_digest(self.secret, other.secret)
            and self.bind_host == other.bind_host
            and self.advertise_host == other.advertise_host
            and self.limits == other.limits
        )


def _ipv4(field: str, value: OptionValue) -> ipaddress.IPv4Address:  # a user setting, checked
    """Parse an address setting, naming the setting when it is wrong.

    Only IPv4 literals are accepted, so checks such as :attr:`TransportSecurity.loopback_only`
    are made on the very address the node binds, not on a name resolved later.
    """
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise SecurityConfigError(
            f"{field} must be an IPv4 address literal such as 127.0.0.1, got {value!r}"
        ) from None


def check_capabilities(capabilities: Options, security: TransportSecurity) -> None:
    """Check ``ActorSystem`` capabilities against the transport security settings.

    Call it in the starting process before ``ActorSystem('multiprocTCPBase', capabilities)``.

    Args:
        capabilities: The capabilities about to be passed to ``ActorSystem``.
        security: The settings installed (or about to be) in this process.

    Raises:
        SecurityConfigError: ``'Process Startup Method'`` is not ``'fork'`` (spawned or
            forkserver processes would start without the hardening), or a loopback-only node
            names a convention leader on another host (the leader could not reach it).
    """
    method = capabilities.get("Process Startup Method", "fork")
    if method != "fork":
        raise SecurityConfigError(
            f"'Process Startup Method' is {method!r}; transport security requires 'fork' so "
            "that the admin and every actor inherit it"
        )
    leaders = capabilities.get("Convention Address.IPv4")
    if not leaders or not security.loopback_only:
        return
    for leader in leaders if isinstance(leaders, list) else [leaders]:
        host = leader[0] if isinstance(leader, tuple) else str(leader).partition(":")[0]
        if host in ("", "localhost"):
            continue
        if not ipaddress.IPv4Address(_ipv4("Convention Address.IPv4", host)).is_loopback:
            raise SecurityConfigError(
                f"the convention leader {host} is on another host but this node listens on "
                f"{security.bind_host} only; set bind_host to this host's address"
            )


# -- installation ------------------------------------------------------------------------------

_install_lock = threading.Lock()
_installed: TransportSecurity | None = None


def installed_transport_security() -> TransportSecurity | None:
    """Return the settings installed in this process, or ``None`` if none are."""
    return _installed


def install_transport_security(security: TransportSecurity) -> None:
    """Harden Thespian's TCP transport in this process (and in processes forked from it).

    Call it before this process creates or attaches to a ``multiprocTCPBase`` ActorSystem.
    Idempotent: a second call with the same settings does nothing.

    Args:
        security: Secret and addresses to use.

    Raises:
        SecurityConfigError: Different settings are already installed, or
            ``THESPIAN_BASE_IPADDR`` is set to an address other than the advertised one.
    """
    global _installed
    with _install_lock:
        if _installed is not None:
            if _installed._same_settings(security):
                return
            raise SecurityConfigError(
                f"transport security is already installed in this process as {_installed!r}; "
                f"it cannot be changed to {security!r} (start a new process)"
            )
        advertise = security.advertise_host
        preset = os.environ.get(_BASE_IPADDR_ENV)
        if advertise is not None:
            if preset and preset != advertise:
                raise SecurityConfigError(
                    f"{_BASE_IPADDR_ENV}={preset} contradicts the advertised address {advertise}"
                )
            os.environ[_BASE_IPADDR_ENV] = advertise
            # Thespian read the variable when it was imported; teach it the address is ours.
            IPBase.thisSystem.add_local_addr(advertise)
        codec = FrameCodec(security.secret, max_frame_bytes=security.limits.max_frame_bytes)
        TCPTransport.serializer = codec
        TCPTransport.ReceiveBuffer = functools.partial(FrameReceiver, codec)
        TCPTransport.TCPTransport._handleReadableIncoming = handle_readable_incoming
        TCPTransport.TCPTransport._acceptNewIncoming = functools.partialmethod(
            accept_new_incoming, security.limits
        )
        TCPTransport.ackMsg = streamBuffer.toSendBuffer(streamBuffer.ackPacket, codec.dumps)
        TCPTransport.ackDataErrMsg = streamBuffer.toSendBuffer(
            streamBuffer.ackDataErrPacket, codec.dumps
        )
        IPBase.TCPv4ActorAddress.bindArgs = property(_make_bind_args(security.bind_host))
        _private_thespian_log()
        install_shutdown_guard()
        install_poll_selector()
        install_admin_start()
        _installed = security


def _private_thespian_log() -> None:
    """Create Thespian's internal log ``0600`` before Thespian opens it with the umask.

    It records refused frames (peers and reasons) and Thespian's own errors. Thespian appends
    to it (``THESPLOG_FILE``, default ``$TMPDIR/thespian.log``); when it rotates the file
    (past its size limit) the new one is Thespian's, created with the umask.
    """
    path = os.environ.get("THESPLOG_FILE") or os.path.join(
        os.environ.get("TMPDIR") or tempfile.gettempdir(), "thespian.log"
    )
    with contextlib.suppress(OSError):  # a log we cannot prepare is Thespian's to fail on
        private_file(path, folder=False)


def harden_transport(
    *,
    bind_host: str = _LOOPBACK,
    advertise_host: str | None = None,
    secret_path: str | os.PathLike[str] | None = None,
    limits: TransportLimits | None = None,
) -> TransportSecurity:
    """Load (or create) the node secret and install the hardening in this process.

    The one call a node starter or a client needs before it creates or attaches to an
    ``ActorSystem('multiprocTCPBase', ...)``. A client must use the same *bind_host* as the
    node it attaches to: Thespian locates the local admin at the advertised address.

    Args:
        bind_host: Address to listen on (see :class:`TransportSecurity`).
        advertise_host: Address to advertise when *bind_host* is ``0.0.0.0``.
        secret_path: Secret file (see :func:`load_or_create_secret`).
        limits: Frame size and connection limits (default: :class:`TransportLimits`).

    Returns:
        The installed settings (pass them to :func:`check_capabilities`).

    Raises:
        SecurityConfigError: See :func:`load_or_create_secret` and
            :func:`install_transport_security`.
    """
    security = TransportSecurity(
        load_or_create_secret(secret_path),
        bind_host=bind_host,
        advertise_host=advertise_host,
        limits=limits or TransportLimits(),
    )
    install_transport_security(security)
    return security


def _make_bind_args(bind_host: str) -> Callable[[ThespianInternal], tuple[tuple[str, int], ...]]:
    """Thespian's ``bindArgs`` replacement: bind to ``bind_host`` where it would bind to all.

    Thespian binds its listening socket to every interface; this keeps the node on the
    configured interface (loopback by default), on Thespian's untyped TCP address.
    """

    def bindArgs(address: ActorAddress) -> tuple[tuple[str, int], ...]:
        """The socket address to bind: ``bind_host`` in place of the wildcard, else as given."""
        host, port = address.bindname[:2]
        if host in ("", _WILDCARD):
            return ((bind_host, port),)
        return (address.bindname,)

    bindArgs.__doc__ = f"Bind address with all-interfaces replaced by {bind_host} (genagent)."
    return bindArgs


# -- import-time check of the wrapped internals -------------------------------------------------


def _check_thespian_internals() -> None:
    """Fail at import if the Thespian internals this module patches are not what it expects.

    Transport security replaces parts of Thespian's TCP transport; on another Thespian version those
    parts may be gone or changed, and a silent mismatch could leave nodes unprotected. An error at
    import is the safe failure.
    """
    problems: list[str] = []
    try:
        version = importlib.metadata.version("thespian")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is not None and version != _SUPPORTED_THESPIAN:
        problems.append(f"installed version is {version}")
    if getattr(TCPTransport, "selectors", None) not in (selectors, POLL_SELECTORS):
        problems.append("TCPTransport.selectors is not the selectors module")
    if getattr(TCPTransport, "serializer", None) is not pickle:
        problems.append("TCPTransport.serializer is not the pickle module")
    for name in ("ackMsg", "ackDataErrMsg"):
        if not isinstance(getattr(TCPTransport, name, None), bytes):
            problems.append(f"TCPTransport.{name} is missing")
    if getattr(streamBuffer, "ackDataErrPacket", None) != "ACK+DATAERR":
        problems.append("streamBuffer.ackDataErrPacket changed")
    if not isinstance(getattr(IPBase.IPActorAddress, "bindArgs", None), property):
        problems.append("IPActorAddress.bindArgs is not a property")
    if getattr(TCPTransport, "ReceiveBuffer", None) is not streamBuffer.ReceiveBuffer:
        problems.append("TCPTransport.ReceiveBuffer is not streamBuffer.ReceiveBuffer")
    if not isinstance(getattr(TCPTransport, "MAX_CONSECUTIVE_READ_FAILURES", None), int):
        problems.append("TCPTransport.MAX_CONSECUTIVE_READ_FAILURES is missing")
    if not isinstance(getattr(TCPTransport, "MAX_INCOMING_SOCKET_PERIOD", None), timedelta):
        problems.append("TCPTransport.MAX_INCOMING_SOCKET_PERIOD is missing")
    if not callable(getattr(errmgmt, "err_recv_inprogress", None)):
        problems.append("errmgmt.err_recv_inprogress is missing")
    uses = {
        (TCPTransport.TCPIncoming_Common.__init__, "ReceiveBuffer"),
        (TCPTransport.TCPIncoming_Common.__init__, "_rData"),
        (TCPTransport.TCPTransport._next_XMIT_3, "ReceiveBuffer"),
        (TCPTransport.TCPTransport._check_XMIT_4_done, "ReceiveBuffer"),
        (TCPTransport.TCPTransport._check_XMIT_4_done, "completed"),
        (TCPTransport.TCPTransport._handlePossibleIncoming, "_handleReadableIncoming"),
        (TCPTransport.TCPTransport._handleReadableIncoming, "_addedDataToIncoming"),
        (TCPTransport.TCPTransport.serializer, "serializer"),
        (TCPTransport.TCPTransport._runWithExpiry, "_acceptNewIncoming"),
        (TCPTransport.TCPTransport._acceptNewIncoming, "_incomingSockets"),
        (TCPTransport.TCPIncoming_Common.delay, "_expires"),
        (TCPTransport.TCPTransport.__init__, "bindArgs"),
        (TCPTransport.TCPTransport.probeAdmin, "bindArgs"),
        (TCPTransport.TCPTransport._addedDataToIncoming, "ackMsg"),
        (TCPTransport.TCPTransport._addedDataToIncoming, "ackDataErrMsg"),
        (multiprocCommon.multiprocessCommon._startAdmin, "startAdmin"),
    }
    for function, name in sorted(uses, key=lambda use: (use[0].__qualname__, use[1])):
        if name not in function.__code__.co_names:
            problems.append(f"{function.__qualname__} no longer uses {name}")
    if problems:
        raise UnsupportedThespianVersion(
            f"genagent_thespian's transport security wraps Thespian {_SUPPORTED_THESPIAN} "
            f"internals, which do not match: {'; '.join(problems)}"
        )


_check_thespian_internals()
