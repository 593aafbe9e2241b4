#!/bin/bash
# Builds the two Debian packages with dpkg-deb (on every Debian and Ubuntu:
# dpkg is essential), split as msmtp/msmtp-mta are:
#
#   qbox      the binary, the personalities that replace nothing, man pages,
#             shell completion, the systemd units (disabled), docs
#   qbox-mta  /usr/sbin/sendmail, mailq, newaliases, /usr/lib/sendmail;
#             Provides/Conflicts/Replaces mail-transport-agent; its
#             postinst creates the system queue and enables the runner
#
# usage: deb.sh BINARY MANDIR OUTDIR   (make deb calls it; run from the
# repository's top). The version comes from git describe, made a valid
# Debian native version (debversion below); DEB_VERSION overrides it.
set -euo pipefail

bin=$1 mandir=$2 out=$3
here=$(dirname "$0")
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-qbox maintainers <maintainers@users.noreply.h-seed-2a1bbac4.example>}

# git describe, Debian-valid: v1.2.0 -> 1.2.0; v1.2.0-5-gabc1234 ->
# 1.2.0+5.gabc1234 (later commits sort higher); no tag ->
# 0.0~git238.g6d6a82d (238 commits; any release 0.0 or later sorts
# higher); a dirty tree adds +dirty.
debversion() {
	local d n
	if d=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
		n=${d%-g*}
		n=${n##*-}
		d=${d#v}
		if [ "$n" = 0 ]; then
			d=${d%-0-g*}
		else
			d=$(sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/' <<<"$d")
		fi
	else
		d="0.0~git$(git rev-list --count HEAD).g$(git rev-parse --short=7 HEAD)"
	fi
	if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		d="$d+dirty"
	fi
	echo "$d" | tr -c 'A-Za-z0-9.+~\n' '.'
}
version=${DEB_VERSION:-$(debversion)}
# Reproducible: every file's time, and the changelog's date, is the
# commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 022

# man PAGE... DIR: the named pages from mandir, gzipped into DIR's man1/man8.
man() {
	local root=$1 p sec
	shift
	for p in "$@"; do
		sec=${p##*.}
		install -d "$root/usr/share/man/man$sec"
		gzip -9n <"$mandir/$p" >"$root/usr/share/man/man$sec/$p.gz"
		chmod 0644 "$root/usr/share/man/man$sec/$p.gz"
	done
}

# docs PKG ROOT: copyright and the (native) changelog every package needs.
docs() {
	local pkg=$1 root=$2 doc=$2/usr/share/doc/$1
	install -d "$doc"
	install -m 0644 "$here/copyright" "$doc/copyright"
	{
		echo "$pkg ($version) unstable; urgency=medium"
		echo
		echo "  * Built from git commit $commit; the changes are in the git history."
		echo
		echo " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
	} | gzip -9n >"$doc/changelog.gz"
	chmod 0644 "$doc/changelog.gz"
}

# control PKG ROOT FIELDS...: DEBIAN/control, md5sums and the maintainer
# scripts, then the .deb.
pack() {
	local pkg=$1 root=$2 s
	shift 2
	install -d "$root/DEBIAN"
	for s in postinst prerm postrm; do
		if [ -f "$here/debian/$pkg.$s" ]; then
			install -m 0755 "$here/debian/$pkg.$s" "$root/DEBIAN/$s"
		fi
	done
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0r md5sum) >"$root/DEBIAN/md5sums"
	chmod 0644 "$root/DEBIAN/md5sums"
	{
		echo "Package: $pkg"
		echo "Version: $version"
		echo "Architecture: $arch"
		echo "Maintainer: $maintainer"
		echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
		printf '%s\n' "$@"
	} >"$root/DEBIAN/control"
	chmod 0644 "$root/DEBIAN/control"
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${pkg}_${version}_$arch.deb" >/dev/null
	echo "$out/${pkg}_${version}_$arch.deb"
}

# --- qbox
r=$work/qbox
install -d "$r/usr/bin"
install -m 0755 "$bin" "$r/usr/bin/qbox"
# The personalities no Debian package installs. qmail-queue is left out:
# it is qmail's own program, which mini-qmail replaces in /var/qmail/bin
# (README), not on PATH; so is its page, qmail-queue.8 (make install
# ships it), a name qmail's own packages hold.
for p in qmail-qmqpc qmail-inject qmail-remote maildirqmtp maildirsmtp; do
	ln -s qbox "$r/usr/bin/$p"
done
man "$r" qbox.1 qbox-completion.1 qbox-flush-maildir.1 qbox-inject.1 qbox-mx-check.1 \
	qbox-probe.1 qbox-queue.1 qbox-serve.8 qmail-qmqpc.8 qmail-inject.8 qmail-remote.8 \
	maildirqmtp.1 maildirsmtp.1
install -d "$r/usr/share/bash-completion/completions" "$r/usr/share/zsh/vendor-completions" \
	"$r/usr/share/fish/vendor_completions.d"
"$bin" completion bash >"$r/usr/share/bash-completion/completions/qbox"
"$bin" completion zsh >"$r/usr/share/zsh/vendor-completions/_qbox"
"$bin" completion fish >"$r/usr/share/fish/vendor_completions.d/qbox.fish"
chmod 0644 "$r/usr/share/bash-completion/completions/qbox" "$r/usr/share/zsh/vendor-completions/_qbox" \
	"$r/usr/share/fish/vendor_completions.d/qbox.fish"
install -d "$r/usr/lib/systemd/system"
install -m 0644 "$here"/systemd/* "$r/usr/lib/systemd/system/"
install -d "$r/etc/default"
install -m 0644 "$here/qbox.default" "$r/etc/default/qbox"
docs qbox "$r"
# Go links statically (by design: no loader cost per sendmail call, and
# it runs in an empty chroot); lintian exempts Go binaries only when it
# sees a source package build-depending on golang-go, which a dpkg-deb
# build has not.
install -d "$r/usr/share/lintian/overrides"
install -m 0644 "$here/lintian-overrides" "$r/usr/share/lintian/overrides/qbox"
gzip -9n <README.md >"$r/usr/share/doc/qbox/README.md.gz"
chmod 0644 "$r/usr/share/doc/qbox/README.md.gz"
install -d "$r/DEBIAN"
echo /etc/default/qbox >"$r/DEBIAN/conffiles"
chmod 0644 "$r/DEBIAN/conffiles"
pack qbox "$r" \
	"Section: mail" \
	"Priority: optional" \
	"Suggests: qbox-mta" \
	"Description: toolbox for the QMQP and QMTP mail protocols" \
	" qbox is one program for D. J. Bernstein's fast mail protocols, QMQP" \
	" and QMTP, plus SMTP: a QMQP client (qbox inject, qmail-qmqpc), a" \
	" QMQP/QMTP/SMTP server that stores durably into a maildir or hands off" \
	" to qmail-queue (qbox serve, socket-activated by systemd), a pipelined" \
	" maildir flusher (maildirqmtp, maildirsmtp), qmail-remote with QMTP by" \
	" MXPS, and checks (mx-check, probe)." \
	" ." \
	" The systemd units come disabled. qbox-mta makes qbox the system's" \
	" sendmail."

# --- qbox-mta
r=$work/qbox-mta
install -d "$r/usr/sbin" "$r/usr/bin" "$r/usr/lib"
ln -s ../bin/qbox "$r/usr/sbin/sendmail"
ln -s qbox "$r/usr/bin/mailq"
ln -s qbox "$r/usr/bin/newaliases"
ln -s ../sbin/sendmail "$r/usr/lib/sendmail"
man "$r" sendmail.8 mailq.1 newaliases.8
docs qbox-mta "$r"
pack qbox-mta "$r" \
	"Depends: qbox (= $version)" \
	"Provides: mail-transport-agent" \
	"Conflicts: mail-transport-agent" \
	"Replaces: mail-transport-agent" \
	"Section: mail" \
	"Priority: optional" \
	"Description: qbox as the system's sendmail, forwarding over QMQP" \
	" Every program that sends mail calls /usr/sbin/sendmail; with this" \
	" package it is qbox, which forwards each message over QMQP to a mail hub" \
	" (/var/qmail/control/qmqpservers) and, while the hub is down, keeps it" \
	" in the system queue /var/spool/qbox, which any user may drop into." \
	" The queue runner (qbox-queue.service) delivers it." \
	" ." \
	" It replaces any other mail transport agent."
