// Package benchmarks holds qbox's cross-command benchmarks, each measuring
// a qbox command beside a peer (Postfix's qmqp-source, smtp-source and
// smtpd, qmqp-sink) or beside the physical limit of a simulated link, in
// the same run: this machine is shared and noisy, so the figures to read
// are the ratios. `make bench` runs them with the rest (-benchtime 1x).
//
// The package has no code of its own, only *_test.go files; benchmarks of
// one package's internals stay in that package.
package benchmarks
