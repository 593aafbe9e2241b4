// Package packaging holds qbox's Debian packaging and its test; it has no
// Go code of its own.
//
//	deb.sh            builds dist/qbox_*.deb and dist/qbox-mta_*.deb with
//	                  dpkg-deb (make deb runs it)
//	systemd/          qbox.service (qbox serve), qbox-qmqp.socket,
//	                  qbox-qmtp.socket, qbox-smtp.socket, qbox-queue.service
//	                  (the sendmail queue runner)
//	qbox.default      /etc/default/qbox, the units' settings
//	debian/           the maintainer scripts of both packages
//	copyright, lintian-overrides
//
// The test (build tag installed, run by .ci/run after `make deb` and
// `apt-get install ./dist/qbox_*.deb`) checks the installed qbox package
// and its units on the host, and takes qbox-mta, which would replace the
// host's MTA, through install, mail, upgrade, remove, purge and reinstall
// in a throwaway root (dpkg --root): see installed_test.go.
package packaging
