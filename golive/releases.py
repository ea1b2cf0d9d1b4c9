"""A host's deploy directory, driven through a Shell:

    <deploy dir>/releases/<version>/   one directory per release, with its manifest
    <deploy dir>/current               symlink to releases/<version>

A release is assembled in releases/.<version>.partial, checked file by file against the
artifact on the host, and renamed into place; `current` is replaced by rename(2) (`mv -T`).
Neither is ever seen half-written. The host needs a POSIX shell, GNU coreutils and tar (and
zstd, if it has it, packs its backups).

Each command run on an SSH host costs a session (about 0.1 s on this machine's loopback, most
of it the login shell reading ~/.bashrc), while file transfers share one SFTP channel; so each
step is one command, and files travel by SFTP: a deploy is three commands a host (check and
back up; list what the host has; assemble, switch and restart).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from shlex import quote

from golive.errors import DeployError, HostCommandError, HostUnreachable, describe_os_error
from golive.manifest import MANIFEST_NAME, Manifest, changes_tarball, parse_sums, sha256_of
from golive.plan import Host, host_relative
from golive.private import reserve_private
from golive.shell import Shell

QUICK = 60.0  # seconds allowed for golive's own bookkeeping commands
REFUSED = 97  # exit code of a host step that refused a path outside the deploy root
RESTART_FAILED = 96  # exit code of a script that switched `current`, then failed to restart
_HASH_FILES = f"find . -type f ! -name {MANIFEST_NAME} -print0 | xargs -0 -r sha256sum"
_SWITCHED = "golive: current switched"
_RESTART_EXITED = "golive: the restart exited"
KEPT_BACKUPS = ".golive-backups"  # each host keeps its newest backups here, owner-only
ZSTD, GZIP = ".tar.zst", ".tar.gz"  # a backup's suffix says how it was packed
_PACKED = "golive: packed"


@dataclass(frozen=True)
class HostCheck:
    host: str
    problems: list[str]
    free_bytes: int


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Transfer:
    """How a release reached a host: bytes sent against the artifact's size, and why."""

    mode: str  # "full" or "incremental"
    bytes_sent: int
    artifact_bytes: int
    reason: str
    linked_from: str | None  # the release unchanged files are hard-linked from


class SwitchFailed(DeployError):
    """Activating a release failed; `switched` says whether `current` had already moved."""

    def __init__(self, host: str, version: str, reason: str, switched: bool) -> None:
        self.switched = switched
        super().__init__(host, f"activate release {version}", reason)


class RestartFailed(HostCommandError):
    """The release went live (`current` switched), then the plan's restart command failed."""


class HostReleases:
    def __init__(self, host: Host, shell: Shell, directory: str) -> None:
        self.host = host
        self.shell = shell
        self.directory = directory
        self.releases = f"{directory}/releases"
        self._packed_as = GZIP  # the suffix of the backup `check` packed last

    def check(
        self,
        needed_bytes: int,
        backup: list[str] | None = None,
        keep_as: str | None = None,
        keep: int = 5,
    ) -> HostCheck:
        """Is the deploy directory there, writable, with room? If so and `backup` names
        paths, pack them into the host's backup file for `fetch_backup`; with `keep_as` (a
        run id) that file is the host's own copy of the run's backup, kept among its newest
        `keep` so a rollback from another machine can fetch it back. In one command.
        The backup is packed by zstd where the host and this machine both have it (a
        third of gzip -1's time, and smaller), by gzip -1 elsewhere."""
        d = quote(self.directory)
        pack, confine = "", ""
        if backup:
            names = " ".join(quote(p) for p in backup)
            confine = f"cd {d} && {_confinement_script(backup)} && "
            pack = (
                f" && if [ $free -ge {needed_bytes // 1024} ]; then cd {d} && existing=$(for "
                f'p in {names}; do [ -e "$p" ] && echo "$p"; done; true) && umask 077 && '
                f"{self._packing(keep_as, keep)}; fi"
            )
        try:
            output = self.shell.run(
                f"if [ ! -d {d} ]; then echo missing; elif [ ! -w {d} ]; then echo readonly; "
                f"else {confine}free=$(df -Pk {d} | awk 'NR==2 {{print $4}}') && "
                f"echo $free{pack}; fi",
                QUICK * 5,
            ).strip()
        except HostCommandError as error:
            if error.exit_code != REFUSED:
                raise
            return HostCheck(self.host.name, [_refusal(error)], 0)
        if output in ("missing", "readonly"):
            state = "does not exist" if output == "missing" else "is not writable"
            return HostCheck(self.host.name, [f"deploy directory {self.directory} {state}"], 0)
        free = int(output.split()[0]) * 1024
        self._packed_as = ZSTD if f"{_PACKED} {ZSTD}" in output else GZIP
        problems = []
        if free < needed_bytes:
            problems.append(
                f"{free // 2**20} MiB free in {self.directory}, {needed_bytes // 2**20} MiB needed"
            )
        return HostCheck(self.host.name, problems, free)

    def _packing(self, keep_as: str | None, keep: int) -> str:
        """Shell that packs $existing into the backup file (and, for a kept copy, removes
        the host's copies beyond the newest `keep`)."""
        packed = quote(self._backup_file("") if keep_as is None else self._kept(keep_as, ""))
        pack = (
            f"{_choose_compressor()} && tar chf - -T /dev/null $existing | $compress > "
            f'{packed}$suffix && echo "{_PACKED} $suffix"'
        )
        if keep_as is None:
            return pack
        kept = quote(f"{self.directory}/{KEPT_BACKUPS}")
        return (
            f"mkdir -p {kept} && {pack} && (cd {kept} && "
            f"ls -t | tail -n +{keep + 1} | xargs -r rm -f --)"
        )

    def _backup_file(self, suffix: str) -> str:
        return f"{self.directory}/.golive-backup{suffix}"

    def fetch_backup(self, stem: Path, keep_as: str | None = None) -> Archive:
        """Bring the backup `check` packed here (with the same `keep_as`), as `stem` plus
        the suffix that says how it was packed. The host's kept copy stays; any other is
        removed from the host."""
        suffix = self._packed_as
        destination = stem.with_name(stem.name + suffix)
        packed = self._backup_file(suffix) if keep_as is None else self._kept(keep_as, suffix)
        try:
            self.shell.get(packed, reserve_private(destination))
        except BaseException:
            self.shell.remove(packed)
            raise
        if keep_as is None:
            self.shell.remove(packed)
        return Archive(destination, sha256_of(destination), destination.stat().st_size)

    def fetch_kept_backup(self, run_id: str, destination: Path) -> Archive:
        """The host's own copy of a run's backup, brought here (packed as `destination`'s
        suffix says)."""
        self.shell.get(self._kept(run_id, suffix_of(destination)), reserve_private(destination))
        return Archive(destination, sha256_of(destination), destination.stat().st_size)

    def _kept(self, run_id: str, suffix: str) -> str:
        return f"{self.directory}/{KEPT_BACKUPS}/{run_id}{suffix}"

    def archive(self, paths: list[str], stem: Path) -> Archive:
        """Pack the given paths (those that exist) on the host and bring the archive here."""
        self.check(0, backup=paths)
        return self.fetch_backup(stem)

    def restore_paths(self, archive: Path, paths: list[str]) -> list[str]:
        """Put `paths` back as `archive` holds them; a path it lacks did not exist then, and
        is removed. Returns the paths restored from the archive. Whatever a plan or a journal
        says, nothing outside the deploy root is deleted or written: each path is checked
        here, in the archive, and again on the host just before the deletion."""
        for path in paths:
            try:
                host_relative(path)
            except ValueError as refused:
                raise DeployError(self.host.name, f"restore {path!r}", str(refused)) from None
        held = _archive_names(self.host.name, archive)
        present = [p for p in paths if p in held]
        upload = f"{self.directory}/.golive-restore{suffix_of(archive)}"
        self.shell.put(archive, upload)
        unpack = f"tar xzf {quote(upload)}"
        if suffix_of(archive) == ZSTD:
            unpack = f"zstd -dcq -- {quote(upload)} | tar xf -"
        extract = (  # zstd by name: tars older than 1.31 cannot find it
            f" && {unpack} -- {' '.join(quote(p) for p in present)}" if present else ""
        )
        try:
            self.shell.run(
                f"cd {quote(self.directory)} && {_confinement_script(paths)} && rm -rf -- "
                f"{' '.join(quote(p) for p in paths)}{extract} && rm -f {quote(upload)}",
                QUICK * 5,
            )
        except HostCommandError as error:
            self.shell.remove(upload)
            if error.exit_code == REFUSED:
                raise DeployError(
                    self.host.name, "restore backed-up paths", _refusal(error)
                ) from None
            raise
        return present

    def current_release(self) -> str | None:
        target = self.shell.readlink(f"{self.directory}/current")
        return target.rsplit("/", 1)[-1] if target else None

    def confirm_release(self, expected: str | None, step: str) -> None:
        """Read `current` back after a switch: the host's state is read, never assumed."""
        found = self.current_release()
        if found != expected:
            raise DeployError(
                self.host.name,
                step,
                f"`current` points at {found or 'nothing'} afterwards, not {expected or 'nothing'}",
            )

    def stage(self, manifest: Manifest, version: str) -> Transfer:
        """Send what the host lacks of a release, to be assembled by `activate`."""
        current, on_host, reason = self._inventory(manifest)
        changed = manifest.changed_from(on_host) if on_host is not None else []
        if on_host is not None and manifest.worth_sending_whole(changed):
            on_host, reason = None, f"{reason}: the whole artifact is as cheap to send"
        staging = f"{self.releases}/.{version}"
        with tempfile.TemporaryDirectory(prefix="golive-") as scratch:
            stale, sums = Path(scratch) / "stale", Path(scratch) / "sums"
            gone = (
                []
                if on_host is None
                else [p for p in on_host if p not in manifest.files or p in changed]
            )
            stale.write_bytes(b"".join(p.encode() + b"\0" for p in gone))
            sums.write_text("".join(f"{e.sha256}  ./{p}\n" for p, e in manifest.files.items()))
            upload = manifest.artifact if on_host is None else changes_tarball(manifest, changed)
            try:
                for local, suffix in ((upload, "upload.tar.gz"), (stale, "stale"), (sums, "sums")):
                    self.shell.put(local, f"{staging}.{suffix}")
            except OSError as error:
                raise self._upload_failed(error, staging, upload.stat().st_size) from None
            sent = sum(path.stat().st_size for path in (upload, stale, sums))
        linked_from = current if on_host is not None else None
        mode = "full" if on_host is None else "incremental"
        return Transfer(mode, sent, manifest.artifact_bytes, reason, linked_from)

    def _upload_failed(self, error: OSError, staging: str, size: int) -> DeployError:
        """Remove what the failed upload left, and say why it failed: over SFTP a full disk
        is only "Failure", so the host's free space is asked rather than guessed."""
        self.shell.run(
            f"rm -f {quote(staging)}.upload.tar.gz {quote(staging)}.stale {quote(staging)}.sums",
            QUICK,
        )
        free = self.shell.run(f"df -Pk {quote(self.releases)} | awk 'NR==2 {{print $4}}'", QUICK)
        free_bytes = int(free.strip() or 0) * 1024
        if error.errno in (errno.ENOSPC, errno.EDQUOT) or free_bytes < size:
            reason = (
                f"the disk holding {self.releases} is full ({free_bytes // 1024} KiB free, the "
                f"upload is {size // 1024} KiB); free space there and retry. The partial "
                "upload was removed"
            )
        else:
            reason = describe_os_error(error, f"sending the release to {self.releases}")
            reason += "; the partial upload was removed"
        return DeployError(self.host.name, "upload the release", reason)

    def _inventory(self, manifest: Manifest) -> tuple[str | None, dict[str, str] | None, str]:
        """The current release, and what it holds (path -> sha256) if an incremental copy
        can build on it; in one command."""
        output = self.shell.run(
            f"mkdir -p {quote(self.releases)} && current=$(readlink "
            f'{quote(self.directory)}/current || true) && echo "$current" && [ -n "$current" ] '
            f'&& cd {quote(self.directory)}/"$current" && {_HASH_FILES} && echo --recorded-- '
            f"&& (cat {MANIFEST_NAME} 2>/dev/null || true) || true",
            QUICK,
        )
        first, _, listing = output.partition("\n")
        current = first.strip().rsplit("/", 1)[-1] or None
        if current is None:
            return None, None, "no release on the host yet"
        actual_sums, _, recorded_sums = listing.partition("--recorded--\n")
        actual, recorded = parse_sums(actual_sums), parse_sums(recorded_sums)
        if not recorded:
            return current, None, f"release {current} on the host has no manifest"
        damaged = sorted(set(recorded.items()) ^ set(actual.items()))
        if damaged:
            return (
                current,
                None,
                (
                    f"release {current} on the host does not match its manifest "
                    f"({len({p for p, _ in damaged})} file(s) differ, e.g. {damaged[0][0]})"
                ),
            )
        changed = len(manifest.changed_from(actual))
        return current, actual, f"{changed} of {len(manifest.files)} files changed"

    def activate(
        self,
        transfer: Transfer,
        manifest: Manifest,
        version: str,
        *,
        switch: bool,
        keep: int = 0,
        protect: tuple[str | None, ...] = (),
        restart: str | None = None,
        restart_timeout: float = 0.0,
    ) -> list[str]:
        """Assemble the staged release, check every file against the artifact, prune to the
        newest `keep` releases, and (if `switch`) point `current` at it and run `restart`;
        in one command, as one round trip a host. Returns the releases pruned. Raises
        SwitchFailed if the release did not go live, RestartFailed if it did and then its
        restart failed."""
        v, staging = quote(version), quote(f".{version}")
        link = (
            f"cp -al {quote(transfer.linked_from)}/. {staging}.partial/ && "
            if (transfer.linked_from)
            else ""
        )
        script = (
            f"cd {quote(self.releases)} && rm -rf {staging}.partial && mkdir {staging}.partial && "
            f"{link}cd {staging}.partial && xargs -0 -r rm -f -- < ../{staging}.stale && "
            f"tar xzf ../{staging}.upload.tar.gz && rm -f {MANIFEST_NAME} && "
            f"sha256sum --quiet --strict -c ../{staging}.sums && "
            f"files=$(find . -type f | wc -l) && {{ [ $files -eq {len(manifest.files)} ] || "
            f'{{ echo "$files files, the artifact has {len(manifest.files)}"; exit 1; }}; }} && '
            f"mv ../{staging}.sums {MANIFEST_NAME} && cd .. && "
            f"rm -f {staging}.upload.tar.gz {staging}.stale && rm -rf {v} && "
            f"mv {staging}.partial {v} && touch {v}"
            + (f" && {self._prune_script(keep, (*protect, version))}" if keep else "")
            + (f" && {self._switch_script(version)} && echo '{_SWITCHED}'" if switch else "")
            + (f" && {self._restart_script(restart)}" if switch and restart else "")
        )
        try:
            output = self.shell.run(script, QUICK * 5 + restart_timeout)
        except HostCommandError as error:
            if restart and error.exit_code == RESTART_FAILED:
                raise self._restart_failed(restart, error) from None
            moved = switch and self._may_have_moved(version)
            if not moved:
                self.shell.run(f"rm -rf {quote(self.releases)}/{staging}.*", QUICK)
            raise SwitchFailed(self.host.name, version, str(error), moved) from error
        pruned, _, _ = output.partition(_SWITCHED)  # the restart's own output follows
        return [line for line in pruned.splitlines() if line]

    def _may_have_moved(self, version: str) -> bool:
        """After a failed activation, whether `current` moved: read from the host, never
        guessed from the command's output (a connection lost after the switch has none).
        A host that cannot be read may have moved."""
        try:
            return self.current_release() == version
        except (HostCommandError, HostUnreachable, OSError):
            return True

    def put_release(self, manifest: Manifest, version: str) -> Transfer:
        """Stage and assemble a release without switching to it."""
        transfer = self.stage(manifest, version)
        self.activate(transfer, manifest, version, switch=False)
        return transfer

    def switch(self, version: str | None) -> None:
        if version is None:
            self.shell.run(f"rm -f {quote(self.directory)}/current", QUICK)
            return
        try:
            self.shell.run(self._switch_script(version), QUICK)
        except HostCommandError as error:
            reason = "that release is not there" if error.exit_code == 1 else str(error)
            raise DeployError(self.host.name, f"switch to {version}", reason) from error

    def switch_and_restart(self, version: str, restart: str, timeout: float) -> None:
        """Point `current` at `version`, then run `restart`, in one command: a rollback's hot
        path, one round trip a host. A failure names which of the two failed."""
        try:
            self.shell.run(
                f"{self._switch_script(version)} && {self._restart_script(restart)}", timeout
            )
        except HostCommandError as error:
            if error.exit_code == RESTART_FAILED:
                raise self._restart_failed(restart, error) from None
            reason = "that release is not there" if error.exit_code == 1 else str(error)
            raise DeployError(self.host.name, f"switch to {version}", reason) from error

    def _restart_script(self, restart: str) -> str:
        """Shell that runs the plan's `restart` as `run` does, and exits RESTART_FAILED,
        having said with which code, if it fails."""
        return (
            f"{{ {self._in_deploy_dir(restart)} || "
            f'{{ echo "{_RESTART_EXITED} $?"; exit {RESTART_FAILED}; }}; }}'
        )

    def _restart_failed(self, restart: str, error: HostCommandError) -> RestartFailed:
        """The restart's failure as `run` names it: its command, exit code and own output."""
        lines = error.output_tail
        lines = lines[lines.index(_SWITCHED) + 1 :] if _SWITCHED in lines else lines
        said = [line for line in lines if line.startswith(_RESTART_EXITED)]
        code = int(said[-1].split()[-1]) if said else None
        output = "\n".join(line for line in lines if not line.startswith(_RESTART_EXITED))
        return RestartFailed(self.host.name, restart, code, output, error.reason)

    def _switch_script(self, version: str) -> str:
        target, temp = quote(f"releases/{version}"), quote(f".current.{version}.tmp")
        return (
            f"cd {quote(self.directory)} && test -d {target} && "
            f"ln -sfn {target} {temp} && mv -T {temp} current"
        )

    def _prune_script(self, keep: int, protect: tuple[str | None, ...]) -> str:
        """Remove all but the newest `keep` releases; never the current one, nor `protect`.
        Prints each release removed."""
        current = f"$(readlink {quote(self.directory)}/current | sed 's|.*/||')"
        spared = " ".join(f"-e {quote(p)}" for p in protect if p)
        return (
            f"(cd {quote(self.releases)} && ls -1t | tail -n +{keep + 1} | "
            f'grep -vxF -e "{current}" {spared} | while IFS= read -r old; do '
            f'rm -rf -- "$old" && echo "$old"; done; true)'
        )

    def prune(self, keep: int, protect: tuple[str | None, ...] = ()) -> list[str]:
        return self.shell.run(self._prune_script(keep, protect), QUICK).split()

    def run(self, command: str, timeout: float) -> str:
        """Run a plan's command in the deploy directory, with the host's name in its env."""
        try:
            return self.shell.run(self._in_deploy_dir(command), timeout)
        except HostCommandError as error:  # name the plan's command, not golive's wrapping
            raise HostCommandError(
                self.host.name, command, error.exit_code, "\n".join(error.output_tail), error.reason
            ) from None

    def _in_deploy_dir(self, command: str) -> str:
        """Shell that runs a plan's command in the deploy directory, with the host's name in
        its env, in a subshell of its own: an `||` or `;` in it cannot reach the script
        around it, nor a `#` comment swallow what follows."""
        exports = (
            f"export GOLIVE_HOST={quote(self.host.name)} GOLIVE_DEPLOY_DIR={quote(self.directory)}"
        )
        return f"cd {quote(self.directory)} && {exports} && (\n{command}\n)"


def _confinement_script(paths: list[str]) -> str:
    """Shell, run in the deploy root, that exits REFUSED naming the first of `paths` that
    leads out of it as the host has it now: by '..', an absolute path, or a link anywhere
    along it (a path that does not exist yet is still written through its parents)."""
    names = " ".join(quote(p) for p in paths)
    return (
        f'root=$(pwd -P) && for p in {names}; do case "$p" in /*|..|../*|*/..|*/../*) '
        f'echo "golive refused $p: it is not below the deploy root $root"; exit {REFUSED};; esac; '
        f'real=$(realpath -m -- "$p") && case "$real/" in "$root"/*) ;; *) echo "golive '
        f'refused $p: it leads to $real, outside the deploy root $root"; exit {REFUSED};; '
        f"esac; done"
    )


def _refusal(error: HostCommandError) -> str:
    said = [line for line in error.output_tail if line.startswith("golive refused")]
    return said[-1].removeprefix("golive ") if said else str(error)


def _archive_names(host: str, archive: Path) -> set[str]:
    """The names a host backup holds, once every member is known to stay inside the deploy
    root (no absolute names, no '..', no links leading out)."""
    if suffix_of(archive) == ZSTD and shutil.which("zstd") is None:
        raise DeployError(
            host,
            "restore backed-up paths",
            f"{archive} is packed by zstd, which this machine lacks: install zstd here "
            "(`apt install zstd`) and roll back again; nothing was restored",
        )
    members = _members(archive)
    for member in members:
        name = PurePosixPath(member.name)
        target = PurePosixPath(member.linkname) if member.issym() or member.islnk() else None
        escapes = name.is_absolute() or ".." in name.parts
        if target is not None:
            escapes |= target.is_absolute() or ".." in target.parts
        if escapes:
            raise DeployError(
                host,
                "restore backed-up paths",
                f"{archive} holds {member.name!r}, which "
                "leads outside the deploy root; nothing was restored from it",
            )
    return {str(PurePosixPath(m.name)) for m in members}


def _members(archive: Path) -> list[tarfile.TarInfo]:
    """The members of a host backup, packed by gzip or (read through `zstd`) by zstd."""
    if suffix_of(archive) == GZIP:
        with tarfile.open(archive) as tar:
            return tar.getmembers()
    with subprocess.Popen(["zstd", "-dcq", "--", str(archive)], stdout=subprocess.PIPE) as unzstd:
        assert unzstd.stdout is not None
        with tarfile.open(fileobj=unzstd.stdout, mode="r|") as tar:
            members = list(tar)
        while unzstd.stdout.read(2**16):  # the end-of-archive padding, so zstd can finish
            pass
    if unzstd.returncode != 0:
        raise tarfile.ReadError(f"zstd could not read {archive} (exit code {unzstd.returncode})")
    return members


def suffix_of(archive: Path | str) -> str:
    """How a host backup was packed, from its name: .tar.zst, or else .tar.gz (as every
    backup was before zstd)."""
    return ZSTD if str(archive).endswith(ZSTD) else GZIP


def _choose_compressor() -> str:
    """Shell that sets $compress and $suffix: zstd if this machine (which verifies and lists
    backups) and the host (which packs and restores them) both have it, else gzip -1."""
    gzip = f"compress='gzip -1' suffix={GZIP}"
    if shutil.which("zstd") is None:
        return gzip
    return (
        f"if command -v zstd >/dev/null 2>&1; then compress='zstd -1 -q' suffix={ZSTD}; "
        f"else {gzip}; fi"
    )
