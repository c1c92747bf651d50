"""Start a private Postfix instance so that its own non-root commands can submit
mail to it with sendmail(1).

The bounce processor runs under pipe(8) as user smtpeter and forwards bounces with
sendmail; pipe exports MAIL_CONFIG, so they go back into the instance that
delivered the bounce. For a private ``postfix -c DIR`` instance that is not enough:
postdrop is set-gid, and a set-gid program accepts a non-default configuration
directory from a user other than root only if the default main.cf
(/etc/postfix/main.cf) lists it in alternate_config_directories. The host's main.cf
is not ours to change (it may not even exist), and pipe(8) refuses
``user=smtpeter:postdrop`` (the setgid_group), which would have spared postdrop its
set-gid step.

So the private master runs in a mount namespace of its own, in which the default
configuration directory is the host's with one file added in memory: a main.cf
listing the instance, as a registered alternate instance would see it. The master
and every process it starts (pipe, smtpeter bounce, sendmail, postdrop) see that;
the host, its own Postfix and every other process see nothing of it, and nothing is
written to the host's files. The namespace ends with the master.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# Inside the namespace: a tmpfs on $1 holds an overlay's upper layer with the main.cf
# that lists $3; the overlay goes over $2 (the default config directory, unchanged
# below it); then the command runs. Exit 97: the namespace could not be set up.
_SETUP = r"""
mount -t tmpfs -o mode=0755,size=1m smtpeter-postfix "$1" || exit 97
mkdir "$1/upper" "$1/work" || exit 97
printf '%s\n' "# smtpeter local stack: seen only in its private Postfix's mount namespace." \
    "alternate_config_directories = $3" > "$1/upper/main.cf" || exit 97
mount -t overlay -o "lowerdir=$2,upperdir=$1/upper,workdir=$1/work" smtpeter-postfix "$2" \
    || exit 97
shift 3
exec "$@"
"""
SETUP_FAILED = 97


def _default_config_dir() -> Path | None:
    result = subprocess.run(
        ["postconf", "-d", "-h", "config_directory"], capture_output=True, text=True
    )
    path = Path(result.stdout.strip())
    return path if result.returncode == 0 and path.is_absolute() and path.is_dir() else None


def namespace_command(config_dir: Path, mount_point: Path) -> list[str] | None:
    """The prefix that runs a command in such a namespace (``mount_point``: an empty
    directory for the in-memory layer), or None where this system cannot make one:
    no unshare(1), no CAP_SYS_ADMIN (an unprivileged container), no overlayfs."""
    default = _default_config_dir()
    paths = (str(config_dir), str(mount_point))
    if (
        shutil.which("unshare") is None
        or default is None
        or any(c in "".join(paths) for c in ", :\n\t")
    ):
        return None
    mount_point.mkdir(parents=True, exist_ok=True)
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _SETUP, "sh",
              str(mount_point), str(default), str(config_dir)]  # fmt: skip
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    return prefix if probe.returncode == 0 else None


def start_postfix(config_dir: Path, mount_point: Path) -> subprocess.CompletedProcess[str]:
    """``postfix -c config_dir start``, in such a namespace where the system allows
    one; elsewhere as is, with a warning: forwarded bounces then stay deferred."""
    command = ["postfix", "-c", str(config_dir), "start"]
    prefix = namespace_command(config_dir, mount_point)
    if prefix is None:
        print(
            "smtpeter: warning: no mount namespace for the private Postfix (needs root "
            "with CAP_SYS_ADMIN, unshare(1) and overlayfs): sendmail(1) run by its pipe "
            "(forwarded bounces) will fail and be retried",
            file=sys.stderr,
        )
        prefix = []
    return subprocess.run([*prefix, *command], capture_output=True, text=True)
