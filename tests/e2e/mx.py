"""A typical existing mail server, built on a private Postfix instance, for testing
``smtpeter postfix setup --mode addon`` on something that is not a blank Postfix.

It is what a hosting MX set up from Debian 12's defaults plus the usual Postfix +
Dovecot + OpenDKIM how-to looks like:

- Postfix: Debian's main.cf and master.cf (as the package's postinst writes them for
  "Internet Site"), ``mx.example.test``, the virtual mailbox domain
  ``hosted.example`` delivered to Dovecot over LMTP, STARTTLS offered on port 25
  (``may``), SASL only on the submission service (TLS required there, Dovecot's
  auth socket ``private/auth``), two milters: a content filter (testmilter.py,
  adds ``X-Second-Milter: seen``) and OpenDKIM signing last. All other mail is
  relayed to a local sink (``relayhost``), so nothing leaves the machine.
- Dovecot (private instance, ``dovecot -c FILE -F``): LMTP on loopback, SASL for
  Postfix, two mailbox users in a passwd-file: alice and bob @hosted.example.
- OpenDKIM (``opendkim -x FILE -f``): signs mail from authenticated clients for
  hosted.example, verifies the rest.

Differences from a real server, all forced by running beside the tests on loopback:
the ports are free loopback ports (``127.0.0.1:PORT`` services stand in for
``smtp`` and ``submission``), no chroot, and ``mynetworks`` / OpenDKIM's
``InternalHosts`` are ``[::1]`` only (Debian's default trusts 127.0.0.0/8, which
would make every test client a trusted relay and DKIM-signing host).

Use the module-scoped fixture ``existing_mx`` (``from tests.e2e.mx import
existing_mx  # noqa: F401`` in a test module), or the context manager
``running_mx()`` in a fixture of your own (``with running_mx() as mx: yield mx``).
OpenDKIM logs only to syslog, which this machine lacks; the other logs are under
``root/log``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from passlib.hash import sha512_crypt

from smtpeter.local import isolate
from smtpeter.local.stack import free_port, port_open, unix_open

HOSTNAME = "mx.example.test"
DOMAIN = "hosted.example"
DKIM_SELECTOR = "mx"
# Mailbox users (address -> Dovecot password).
USERS = {f"alice@{DOMAIN}": "alice-Secret-1", f"bob@{DOMAIN}": "bob-Secret-2"}
# The system user owning the virtual mailboxes (made by scripts/bootstrap; made here
# too if missing).
VMAIL_USER = "vmail"
TESTMILTER = Path(__file__).with_name("testmilter.py")
# As `doveadm pw -s SHA512-CRYPT` makes them (passlib's default rounds take 0.4 s).
_SHA512_CRYPT = sha512_crypt.using(rounds=5000)
_MILTERS = ("second-milter", "opendkim")


class MXError(RuntimeError):
    pass


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _ensure_vmail_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(VMAIL_USER)
    except KeyError:
        subprocess.run(
            ["adduser", "--quiet", "--system", "--group", "--no-create-home",
             "--home", "/var/vmail", VMAIL_USER],
            check=True, capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(VMAIL_USER)


def require_tools() -> None:
    """Fail (not skip) without root or a package scripts/bootstrap installs."""
    if os.geteuid() != 0:
        pytest.fail("the existing-MX fixture runs Postfix, Dovecot and OpenDKIM: run as root")
    for tool in ("postfix", "dovecot", "opendkim", "opendkim-genkey", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/bootstrap")


class ExistingMX:
    """The "before" server. Construct, then ``start()``; ``stop()`` ends every
    process and removes ``root`` (kept if SMTPETER_KEEP_STACK is set)."""

    hostname = HOSTNAME
    domain = DOMAIN
    users = USERS
    dkim_selector = DKIM_SELECTOR

    def __init__(self, root: Path | None = None, python: str = sys.executable) -> None:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="smtpeter-mx-"))
        # Postfix's and Dovecot's unprivileged users must traverse it.
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self.root = root
        self.python = python
        (
            self.smtp_port,
            self.submission_port,
            self.lmtp_port,
            self.opendkim_port,
            self.second_milter_port,
            self.sink_port,
        ) = _free_ports(6)
        # master.cf service keys (`postconf -M KEY`, `postconf -P KEY/PARAM`): the
        # stand-ins for `smtp/inet` and `submission/inet`.
        self.smtp_service = f"127.0.0.1:{self.smtp_port}/inet"
        self.submission_service = f"127.0.0.1:{self.submission_port}/inet"
        self.opendkim_milter = f"inet:127.0.0.1:{self.opendkim_port}"
        self.second_milter = f"inet:127.0.0.1:{self.second_milter_port}"
        # Paths.
        self.postfix_dir = root / "postfix"
        self.main_cf = self.postfix_dir / "main.cf"
        self.master_cf = self.postfix_dir / "master.cf"
        self.queue_dir = root / "queue"
        self.data_dir = root / "postfix-data"
        self.log_dir = root / "log"
        self.cert_file = root / "tls" / "cert.pem"
        self.key_file = root / "tls" / "key.pem"
        self.dovecot_dir = root / "dovecot"
        self.dovecot_conf = self.dovecot_dir / "dovecot.conf"
        self.dovecot_users = self.dovecot_dir / "users"
        # Dovecot's SASL socket, as smtpd (which chdirs to the queue) names it.
        self.auth_socket = self.queue_dir / "private" / "auth"
        self.vmail_dir = root / "vmail"
        self.opendkim_dir = root / "opendkim"
        self.opendkim_conf = self.opendkim_dir / "opendkim.conf"
        self.dkim_key_file = self.opendkim_dir / f"{DKIM_SELECTOR}.private"
        self.dkim_txt_file = self.opendkim_dir / f"{DKIM_SELECTOR}.txt"
        self.sink_dir = root / "sink"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_file(self, component: str) -> Path:
        """postfix, dovecot, opendkim (stderr only: it logs to syslog), second-milter,
        sink."""
        return self.log_dir / f"{component}.log"

    # -- commands -------------------------------------------------------------------
    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.postfix_dir), *args],
            capture_output=True, text=True, check=check,
        )  # fmt: skip

    def postconf(self, *args: str) -> str:
        """``postconf -c DIR ARGS``; returns its output."""
        result = subprocess.run(
            ["postconf", "-c", str(self.postfix_dir), *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return result.stdout

    def reload(self) -> None:
        result = self.postfix("reload", check=False)
        if result.returncode != 0:
            raise MXError("postfix reload failed:\n" + result.stderr + self._postfix_log())

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.postfix_dir), "-f"], capture_output=True)

    def queue(self) -> str:
        """``postqueue -j``: one JSON object a line per queued message."""
        return subprocess.run(
            ["postqueue", "-c", str(self.postfix_dir), "-j"], capture_output=True, text=True
        ).stdout

    # -- messages -------------------------------------------------------------------
    def mailbox(self, user: str) -> list[Path]:
        """The messages Dovecot delivered to a mailbox ("alice" or
        "alice@hosted.example"), oldest first."""
        local, _, domain = user.partition("@")
        maildir = self.vmail_dir / (domain or DOMAIN) / local / "Maildir"
        found = [p for sub in ("new", "cur") if (maildir / sub).is_dir()
                 for p in (maildir / sub).iterdir()]  # fmt: skip
        return sorted(found, key=lambda p: p.name)

    def sunk(self) -> list[Path]:
        """The messages relayed to the outbound sink, oldest first."""
        new = self.sink_dir / "new"
        return sorted(new.iterdir(), key=lambda p: p.name) if new.is_dir() else []

    def wait_for(self, where: Callable[[], list[Path]], mark: str, timeout: float = 15) -> bytes:
        """The first message containing ``mark`` in ``where()`` (``mx.sunk`` or
        ``lambda: mx.mailbox("bob")``), flushing the queue while waiting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in where():
                data = path.read_bytes()
                if mark.encode() in data:
                    return data
            self.flush()
            time.sleep(0.1)
        raise AssertionError(
            f"message {mark} not delivered within {timeout} s; queue: {self.queue()!r}\n"
            + self._postfix_log()
        )

    @property
    def dkim_record(self) -> str:
        """The TXT record of the DKIM key (what would be published at
        mx._domainkey.hosted.example)."""
        return "".join(re.findall(r'"([^"]*)"', self.dkim_txt_file.read_text()))

    def dkim_verify(self, message: bytes) -> bool:
        """Verify a message's DKIM-Signature against this server's key (dkimpy)."""
        import dkim

        record = self.dkim_record.encode()
        expected = f"{DKIM_SELECTOR}._domainkey.{DOMAIN}."

        def dns(name: bytes | str, timeout: int = 5) -> bytes | None:
            name = name.decode() if isinstance(name, bytes) else name
            return record if name.rstrip(".") + "." == expected else None

        return bool(dkim.verify(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
                                dnsfunc=dns))  # fmt: skip

    # -- setup ----------------------------------------------------------------------
    def prepare(self) -> None:
        vmail = _ensure_vmail_user()
        for d in (self.postfix_dir, self.log_dir, self.cert_file.parent, self.dovecot_dir,
                  self.dovecot_dir / "run", self.dovecot_dir / "state", self.opendkim_dir,
                  self.sink_dir, self.vmail_dir, self.data_dir, self.queue_dir):  # fmt: skip
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        shutil.chown(self.data_dir, "postfix")
        shutil.chown(self.vmail_dir, vmail.pw_uid, vmail.pw_gid)
        self.vmail_dir.chmod(0o770)
        self._write_tls()
        self._write_postfix()
        self._write_dovecot(vmail)
        self._write_opendkim()

    def _write_tls(self) -> None:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", f"/CN={HOSTNAME}",
             "-addext", f"subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1",
             "-keyout", str(self.key_file), "-out", str(self.cert_file)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.key_file.chmod(0o600)

    def _write_postfix(self) -> None:
        d = self.postfix_dir
        (d / "mailname").write_text(HOSTNAME + "\n")
        (d / "aliases").write_text("# See man 5 aliases for format\npostmaster:    root\n")
        (d / "vmailbox").write_text("".join(f"{user} OK\n" for user in USERS))
        (d / "virtual").write_text(
            f"postmaster@{DOMAIN} alice@{DOMAIN}\nabuse@{DOMAIN} alice@{DOMAIN}\n"
        )
        self.main_cf.write_text(self._main_cf())
        self.master_cf.write_text(self._master_cf())
        # The postfix command waits (up to seconds) for a main.cf written this very
        # moment to settle; these were written whole, so date them back.
        settled = time.time() - 10
        for cf in (self.main_cf, self.master_cf):
            os.utime(cf, (settled, settled))
        # Fills the queue directory, private/ included (for Dovecot's auth socket).
        # Before postalias: its logging waits for the queue's postlog socket.
        result = self.postfix("check", check=False)
        if result.returncode != 0:
            raise MXError("postfix check failed:\n" + result.stderr + self._postfix_log())
        for cmd in (["postalias", "-c", str(d), f"hash:{d / 'aliases'}"],
                    ["postmap", "-c", str(d), f"hash:{d / 'vmailbox'}"],
                    ["postmap", "-c", str(d), f"hash:{d / 'virtual'}"]):  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)

    def _main_cf(self) -> str:
        d = self.postfix_dir
        return f"""\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version

# A private instance (test fixture): its own directories, log file, loopback only.
config_directory = {d}
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.log_file("postfix")}
maillog_file_prefixes = {self.log_dir}

# Debian specific:  Specifying a file name will cause the first
# line of that file to be used as the name.  The Debian default
# is /etc/mailname.
myorigin = {d / "mailname"}

smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no

# appending .domain is the MUA's job.
append_dot_mydomain = no

# Uncomment the next line to generate "delayed mail" warnings
#delay_warning_time = 4h

readme_directory = no

# See http://www.postfix.org/COMPATIBILITY_README.html -- default to 3.6 on
# fresh installs.
compatibility_level = 3.6



# TLS parameters
smtpd_tls_cert_file={self.cert_file}
smtpd_tls_key_file={self.key_file}
smtpd_tls_security_level=may

smtp_tls_CApath=/etc/ssl/certs
smtp_tls_security_level=may
smtp_tls_session_cache_database = btree:${{data_directory}}/smtp_scache


smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = {HOSTNAME}
alias_maps = hash:{d / "aliases"}
alias_database = hash:{d / "aliases"}
mydestination = $myhostname, localhost.example.test, localhost
# Outbound mail goes to the test's sink instead of the recipients' MX.
relayhost = [127.0.0.1]:{self.sink_port}
# Debian's default is 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128; the tests'
# clients connect from 127.0.0.1 and must count as the outside world.
mynetworks = [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = 127.0.0.1
inet_protocols = ipv4

# Hosted mailboxes: Postfix accepts mail for the users Dovecot has and hands it
# to Dovecot's LMTP server.
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = hash:{d / "vmailbox"}
virtual_alias_maps = hash:{d / "virtual"}
virtual_transport = lmtp:inet:127.0.0.1:{self.lmtp_port}

# Milters: the content filter, then OpenDKIM (the signer goes last).
milter_protocol = 6
milter_default_action = accept
smtpd_milters = {self.second_milter}, {self.opendkim_milter}
non_smtpd_milters = $smtpd_milters
"""

    def _master_cf(self) -> str:
        return f"""\
#
# Postfix master process configuration file.  For details on the format
# of the file, see the master(5) manual page (command: "man 5 master" or
# on-line: http://www.postfix.org/master.5.html).
#
# Do not forget to execute "postfix reload" after editing this file.
#
# (A private instance: no chroot, and loopback ports standing in for smtp and
# submission.)
#
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
# smtp on port 25:
127.0.0.1:{self.smtp_port} inet n       -       n       -       -       smtpd
#smtp      inet  n       -       y       -       1       postscreen
#smtpd     pass  -       -       y       -       -       smtpd
#dnsblog   unix  -       -       y       -       0       dnsblog
#tlsproxy  unix  -       -       y       -       0       tlsproxy
# submission on port 587 (as the Dovecot wiki's Postfix SASL how-to has it):
127.0.0.1:{self.submission_port} inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=private/auth
  -o smtpd_tls_auth_only=yes
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
#628       inet  n       -       y       -       -       qmqpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
#qmgr     unix  n       -       n       300     1       oqmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
        -o syslog_name=postfix/$service_name
#       -o smtp_helo_timeout=5 -o smtp_connect_timeout=5
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
#
# ====================================================================
# Interfaces to non-Postfix software. Be sure to examine the manual
# pages of the non-Postfix software to find out what options it wants.
#
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${{recipient}}
uucp      unix  -       n       n       -       -       pipe
  flags=Fqhu user=uucp argv=uux -r -n -z -a$sender - $nexthop!rmail ($recipient)
"""

    def _write_dovecot(self, vmail: pwd.struct_passwd) -> None:
        self.dovecot_users.write_text(
            "".join(f"{user}:{_SHA512_CRYPT.hash(password)}::::::\n"
                    for user, password in USERS.items())
        )  # fmt: skip
        # Read by Dovecot's auth process (user dovecot).
        shutil.chown(self.dovecot_users, "root", "dovecot")
        self.dovecot_users.chmod(0o640)
        self.dovecot_conf.write_text(f"""\
# Dovecot for {HOSTNAME}: LMTP delivery into the hosted mailboxes and SASL auth
# for Postfix's submission service. A private instance: its own base_dir, log
# and ports, no IMAP/POP3 listeners.
instance_name = smtpeter-mx-{self.lmtp_port}
base_dir = {self.dovecot_dir / "run"}
state_dir = {self.dovecot_dir / "state"}
log_path = {self.log_file("dovecot")}
protocols = lmtp
listen = 127.0.0.1
ssl = no
# Debian's default is 500, above the uid of a system user such as vmail.
first_valid_uid = {vmail.pw_uid}
mail_location = maildir:~/Maildir
auth_mechanisms = plain login

passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%u {self.dovecot_users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.dovecot_users}
  default_fields = uid={VMAIL_USER} gid={VMAIL_USER} home={self.vmail_dir}/%d/%n
}}

service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}

service auth {{
  # Postfix smtp-auth
  unix_listener {self.auth_socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
""")

    def _write_opendkim(self) -> None:
        subprocess.run(
            ["opendkim-genkey", "-b", "2048", "-d", DOMAIN, "-s", DKIM_SELECTOR,
             "-D", str(self.opendkim_dir)],
            check=True, capture_output=True,
        )  # fmt: skip
        shutil.chown(self.dkim_key_file, "opendkim", "opendkim")
        self.dkim_key_file.chmod(0o600)
        trusted = self.opendkim_dir / "TrustedHosts"
        trusted.write_text("::1\n")
        self.opendkim_conf.write_text(f"""\
# OpenDKIM for {HOSTNAME} (Debian's opendkim.conf plus a signing domain).
# Logs go to syslog, as Debian's do.
Syslog			yes
SyslogSuccess		yes
LogWhy			yes
Canonicalization	relaxed/simple
OversignHeaders		From
UserID			opendkim
UMask			007
Mode			sv
Domain			{DOMAIN}
Selector		{DKIM_SELECTOR}
KeyFile			{self.dkim_key_file}
# The key is under /tmp, which every user may write to: OpenDKIM refuses such a
# key unless told not to check (a real server keeps it under /etc/opendkim).
RequireSafeKeys		no
Socket			inet:{self.opendkim_port}@127.0.0.1
# Signs mail from authenticated clients and the hosts in this file (as
# mynetworks: not 127.0.0.1, where the tests' outside senders connect from).
InternalHosts		{trusted}
""")

    # -- processes ------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], ready: Callable[[], bool]) -> None:
        with open(self.log_file(name), "ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._procs[name] = proc
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ready():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise MXError(f"{name} did not start ({cmd}); {self.log_file(name)}:\n"
                      + _tail(self.log_file(name)))  # fmt: skip

    def start(self) -> None:
        self.prepare()
        self._spawn(
            "sink",
            [self.python, "-m", "smtpeter", "sink", "--port", str(self.sink_port),
             "--maildir", str(self.sink_dir)],
            lambda: port_open(self.sink_port),
        )  # fmt: skip
        self._spawn(
            "second-milter",
            [self.python, str(TESTMILTER), f"inet:{self.second_milter_port}@127.0.0.1"],
            lambda: port_open(self.second_milter_port),
        )
        self._spawn(
            "opendkim",
            ["opendkim", "-x", str(self.opendkim_conf), "-f"],
            lambda: port_open(self.opendkim_port),
        )
        self._spawn(
            "dovecot",
            ["dovecot", "-c", str(self.dovecot_conf), "-F"],
            lambda: port_open(self.lmtp_port) and unix_open(self.auth_socket),
        )
        # As the local stack does, so that sendmail(1) run by a pipe of this
        # instance (the bounce processor forwarding a bounce) is accepted.
        result = isolate.start_postfix(self.postfix_dir, self.root / "postfix-etc")
        if result.returncode != 0:
            raise MXError("postfix did not start:\n" + result.stderr + self._postfix_log())
        deadline = time.monotonic() + 20
        while not (port_open(self.smtp_port) and port_open(self.submission_port)):
            if time.monotonic() > deadline:
                raise MXError("postfix is not listening:\n" + self._postfix_log())
            time.sleep(0.05)

    def stop(self) -> None:
        if self.main_cf.exists() and self.postfix("status", check=False).returncode == 0:
            self.postfix("stop", check=False)
        # libmilter's listener notices SIGTERM only every 5 s; the two milters keep
        # no state, so they are killed outright.
        for name, proc in self._procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if name in _MILTERS else signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self._procs.clear()
        if os.environ.get("SMTPETER_KEEP_STACK"):
            print(f"existing MX kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _postfix_log(self) -> str:
        return _tail(self.log_file("postfix"))


@contextlib.contextmanager
def running_mx(root: Path | None = None) -> Iterator[ExistingMX]:
    require_tools()
    mx = ExistingMX(root)
    try:
        mx.start()
        yield mx
    finally:
        mx.stop()


@pytest.fixture(scope="module")
def existing_mx() -> Iterator[ExistingMX]:
    """An ExistingMX for the whole test module that imports this fixture."""
    with running_mx() as mx:
        yield mx
