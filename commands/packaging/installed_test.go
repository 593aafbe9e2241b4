//go:build installed

// The installed-package test, run as root by .ci/run's stage "packages"
// after `make deb` and `apt-get install ./dist/qbox_*.deb`:
//
//	go test -tags installed ./commands/packaging/
//
// TestInstalledQbox checks the qbox package as the host has it installed,
// and its units (systemd-analyze verify and security).
// TestServeUnitInThrowawayRoot runs qbox.service as qbox-qmqp.socket
// activates it and hands it a message. TestMTAInThrowawayRoot
// takes qbox-mta, which replaces the host's MTA (Postfix, which the peer
// tests need), through its life in a throwaway root: dpkg --root into a
// temporary directory, the maintainer scripts run chrootless with
// $DPKG_ROOT, and the installed static binary run chrooted into it, so
// /usr/sbin/sendmail, /var/spool/qbox and /var/qmail/control are the
// package's own. Nothing on the host changes.
package packaging

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// guard bounds each wait: generous, for a busy CI machine, never a
// measurement.
const guard = 2 * time.Minute

// The environment of the unit helper (TestMain): the test binary re-runs
// itself to start a unit's ExecStart the way systemd would (chroot,
// capability bounding set, no_new_privs) and execs it.
const (
	helperRoot = "QBOX_UNIT_HELPER_ROOT"
	helperCaps = "QBOX_UNIT_HELPER_CAPS"
	helperNNP  = "QBOX_UNIT_HELPER_NNP"
	helperUID  = "QBOX_UNIT_HELPER_UID"  // run as this uid (and gid), not root
	helperProc = "QBOX_UNIT_HELPER_PROC" // mount /proc in the root
	// set LISTEN_PID to the exec'd process, as systemd does for socket
	// activation
	helperListen = "QBOX_UNIT_HELPER_LISTEN"
)

func TestMain(m *testing.M) {
	if root := os.Getenv(helperRoot); root != "" {
		unitHelper(root)
		return
	}
	os.Exit(m.Run())
}

// unitHelper: os.Args are [self, PATH, ARGV0, ARGS...]. On this thread it
// chroots into root, drops every capability from the bounding set but
// those in $QBOX_UNIT_HELPER_CAPS, takes the uid asked for, sets
// no_new_privs when asked, and execs PATH with ARGV0 and the environment
// minus its own variables.
func unitHelper(root string) {
	runtime.LockOSThread()
	fail := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "unit helper: "+f+"\n", a...)
		os.Exit(120)
	}
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		fail("%v", err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		fail("cap_last_cap: %v", err)
	}
	keep := map[int]bool{}
	for _, c := range strings.Fields(os.Getenv(helperCaps)) {
		n, err := strconv.Atoi(c)
		if err != nil {
			fail("cap %q", c)
		}
		keep[n] = true
	}
	nnp := os.Getenv(helperNNP) != ""
	uid := -1
	if u := os.Getenv(helperUID); u != "" {
		if uid, err = strconv.Atoi(u); err != nil {
			fail("uid %q", u)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QBOX_UNIT_HELPER_") {
			env = append(env, kv)
		}
	}
	if os.Getenv(helperListen) != "" {
		env = append(env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	}
	// A unit sees /proc (serve's maildir links its O_TMPFILE files through
	// /proc/self/fd): mounted in this process's own mount namespace
	// (runUnit unshares it; Go makes / private first), so the host never
	// sees it and it goes with the process.
	if os.Getenv(helperProc) != "" {
		if err := os.MkdirAll(filepath.Join(root, "proc"), 0o555); err != nil {
			fail("%v", err)
		}
		if err := syscall.Mount("proc", filepath.Join(root, "proc"), "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			fail("mount proc: %v", err)
		}
	}
	if err := syscall.Chroot(root); err != nil {
		fail("chroot %s: %v", root, err)
	}
	if err := syscall.Chdir("/"); err != nil {
		fail("%v", err)
	}
	const prCapbsetDrop, prSetNoNewPrivs = 24, 38
	for c := 0; c <= last; c++ {
		if keep[c] {
			continue
		}
		if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, prCapbsetDrop, uintptr(c), 0, 0, 0, 0); e != 0 {
			fail("PR_CAPBSET_DROP %d: %v", c, e)
		}
	}
	if uid >= 0 {
		if err := syscall.Setgroups(nil); err != nil {
			fail("setgroups: %v", err)
		}
		if err := syscall.Setgid(uid); err != nil {
			fail("setgid: %v", err)
		}
		if err := syscall.Setuid(uid); err != nil {
			fail("setuid: %v", err)
		}
	}
	if nnp {
		if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0, 0, 0, 0); e != 0 {
			fail("PR_SET_NO_NEW_PRIVS: %v", e)
		}
	}
	args := os.Args[2:]
	err = syscall.Exec(os.Args[1], args, env)
	fail("exec %s: %v", os.Args[1], err)
}

// capNumbers are the capabilities a unit here may keep.
var capNumbers = map[string]int{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10,
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the installed-package test runs as root (as .ci/run does): it installs packages into a throwaway root and chroots into it")
	}
}

// debs returns the two packages make deb built and their version.
func debs(t *testing.T) (qbox, mta, version string) {
	t.Helper()
	dir := os.Getenv("QBOX_DIST")
	if dir == "" {
		dir = filepath.Join(testpeer.Root(), "dist")
	}
	one := func(pattern string) string {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		if len(m) != 1 {
			t.Fatalf("want one %s in %s, found %d: run make deb", pattern, dir, len(m))
		}
		return m[0]
	}
	qbox, mta = one("qbox_*.deb"), one("qbox-mta_*.deb")
	out, err := exec.Command("dpkg-deb", "-f", qbox, "Version").Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s: %v", qbox, err)
	}
	return qbox, mta, strings.TrimSpace(string(out))
}

var units = []string{"qbox.service", "qbox-qmqp.socket", "qbox-qmtp.socket", "qbox-smtp.socket", "qbox-queue.service"}

// TestInstalledQbox: the qbox package as installed on this machine.
func TestInstalledQbox(t *testing.T) {
	requireRoot(t)
	_, _, version := debs(t)
	out, err := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", "qbox").Output()
	if got := strings.TrimSpace(string(out)); err != nil || got != "ii "+version {
		t.Fatalf("dpkg-query qbox: %q (%v); want %q: apt-get install ./dist/qbox_*.deb first (.ci/run does)", out, err, "ii "+version)
	}
	if out, err := exec.Command("/usr/bin/qbox", "--version").CombinedOutput(); err != nil {
		t.Fatalf("/usr/bin/qbox --version: %v\n%s", err, out)
	}
	for _, p := range []string{"qmail-qmqpc", "qmail-inject", "qmail-remote", "maildirqmtp", "maildirsmtp"} {
		if target, err := os.Readlink("/usr/bin/" + p); err != nil || target != "qbox" {
			t.Errorf("/usr/bin/%s -> %q (%v), want qbox", p, target, err)
		}
	}
	for _, f := range []string{
		"/usr/share/man/man1/qbox.1.gz", "/usr/share/man/man8/qbox-serve.8.gz", "/usr/share/man/man1/maildirqmtp.1.gz",
		"/usr/share/bash-completion/completions/qbox", "/usr/share/zsh/vendor-completions/_qbox",
		"/usr/share/fish/vendor_completions.d/qbox.fish", "/etc/default/qbox", "/usr/share/doc/qbox/copyright",
	} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	// Disabled by default: nothing of qbox's is wanted by any target.
	wants, _ := filepath.Glob("/etc/systemd/system/*.wants/qbox*")
	if len(wants) > 0 && !mtaInstalled() {
		t.Errorf("qbox's units are enabled without qbox-mta: %v", wants)
	}

	var paths []string
	for _, u := range units {
		paths = append(paths, "/usr/lib/systemd/system/"+u)
	}
	// verify loads each unit as systemd would (without systemd as PID 1)
	// and checks the ExecStart binary and (with man-db) the man pages
	// exist.
	verify := []string{"verify"}
	if _, err := exec.LookPath("man"); err != nil {
		t.Log("man is not installed: systemd-analyze verify --man=no")
		verify = append(verify, "--man=no")
	}
	if out, err := exec.Command("systemd-analyze", append(verify, paths...)...).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The exposure README gives; serve's target is 2.0 at most.
	for u, most := range map[string]float64{"qbox.service": 2.0, "qbox-queue.service": 2.0} {
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "/usr/lib/systemd/system/"+u).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Errorf("systemd-analyze security %s: %v\n%s", u, err, out)
			continue
		}
		got, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s exposure %.1f", u, got)
		if got > most {
			t.Errorf("%s exposure %.1f, want at most %.1f", u, got, most)
		}
	}
}

func mtaInstalled() bool {
	out, _ := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "qbox-mta").Output()
	return strings.HasPrefix(string(out), "ii")
}

// throwaway is a root directory dpkg installs into.
type throwaway struct {
	t    *testing.T
	root string
}

func newThrowaway(t *testing.T) *throwaway {
	root := t.TempDir()
	// Users other than root run programs in it (t.TempDir is 0700).
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "var/qmail/control", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return &throwaway{t: t, root: root}
}

func (r *throwaway) path(p string) string { return filepath.Join(r.root, p) }

// dpkg runs dpkg on the throwaway root: its database, its files, its
// log; the maintainer scripts run with $DPKG_ROOT set to it.
func (r *throwaway) dpkg(args ...string) string {
	r.t.Helper()
	all := append([]string{"--root=" + r.root, "--force-script-chrootless", "--log=" + r.path("var/log/dpkg.log")}, args...)
	out, err := exec.Command("dpkg", all...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hub sets the QMQP server every sendmail and the runner use, as an admin
// would: /var/qmail/control/qmqpservers.
func (r *throwaway) hub(addr string) {
	r.t.Helper()
	if err := os.WriteFile(r.path("var/qmail/control/qmqpservers"), []byte(addr+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// sendmail runs the installed /usr/sbin/sendmail, chrooted into the
// throwaway root, as uid with a login's environment.
func (r *throwaway) sendmail(uid uint32, user, msg string) {
	r.t.Helper()
	cmd := exec.Command("/usr/sbin/sendmail", "-t", "-i")
	cmd.Env = []string{"PATH=/usr/bin:/usr/sbin:/bin", "HOME=/", "USER=" + user, "LOGNAME=" + user}
	cmd.Stdin = strings.NewReader(msg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: r.root, Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("sendmail as %s: %v\n%s", user, err, out)
	}
}

// queued counts the messages in the system queue: drop files waiting for
// pickup, and queue/new and queue/cur.
func (r *throwaway) queued() (drops, queued int) {
	r.t.Helper()
	count := func(dir string) int {
		es, err := os.ReadDir(r.path(dir))
		if err != nil && !os.IsNotExist(err) {
			r.t.Fatal(err)
		}
		n := 0
		for _, e := range es {
			if !strings.HasPrefix(e.Name(), ".") && e.Type().IsRegular() {
				n++
			}
		}
		return n
	}
	return count("var/spool/qbox/maildrop"), count("var/spool/qbox/queue/new") + count("var/spool/qbox/queue/cur")
}

// checkQueueDirs checks the system queue's three directories: root's,
// with README's exact modes.
func (r *throwaway) checkQueueDirs() {
	r.t.Helper()
	for d, mode := range map[string]os.FileMode{
		"var/spool/qbox": 0o755, "var/spool/qbox/maildrop": 0o1733, "var/spool/qbox/queue": 0o700,
	} {
		st, err := os.Lstat(r.path(d))
		if err != nil {
			r.t.Fatalf("the system queue: %v", err)
		}
		got := st.Mode().Perm()
		if st.Mode()&os.ModeSticky != 0 {
			got |= 0o1000
		}
		sys := st.Sys().(*syscall.Stat_t)
		if !st.IsDir() || got != mode || sys.Uid != 0 || sys.Gid != 0 {
			r.t.Errorf("/%s: mode %04o uid %d gid %d, want a directory, %04o, root:root", d, got, sys.Uid, sys.Gid, mode)
		}
	}
}

// runnerEnabled reports whether qbox-mta's postinst enabled the runner
// (the wants/ link that enabling the unit makes).
func (r *throwaway) runnerEnabled() bool {
	target, err := os.Readlink(r.path("etc/systemd/system/multi-user.target.wants/qbox-queue.service"))
	return err == nil && target == "/usr/lib/systemd/system/qbox-queue.service"
}

// unit is what the test takes from a unit file's [Service] section.
type unit struct {
	env     map[string]string
	exec    []string // ExecStart, after $VAR and ${VAR} expansion
	argv0   string   // ExecStart's "@" form, else exec[0]
	user    string
	dynamic bool   // DynamicUser=yes
	state   string // StateDirectory=
	caps    []string
	noNewPr bool
}

// readUnit reads an installed service unit and its EnvironmentFile from
// the throwaway root, as systemd does for these units: Environment= then
// EnvironmentFile= (later wins), ExecStart= with $VAR (split into words)
// and ${VAR} (in a word) expanded, "@" giving argv[0].
func (r *throwaway) readUnit(name string) unit {
	r.t.Helper()
	b, err := os.ReadFile(r.path("usr/lib/systemd/system/" + name))
	if err != nil {
		r.t.Fatal(err)
	}
	u := unit{env: map[string]string{}, user: "root", caps: []string{"all"}}
	var execStart string
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = line
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		if section != "[Service]" {
			continue
		}
		switch k {
		case "Environment":
			for _, kv := range splitQuoted(v) {
				ek, ev, _ := strings.Cut(kv, "=")
				u.env[ek] = ev
			}
		case "EnvironmentFile":
			r.envFile(strings.TrimPrefix(v, "-"), strings.HasPrefix(v, "-"), u.env)
		case "ExecStart":
			execStart = v
		case "User":
			u.user = v
		case "DynamicUser":
			u.dynamic = v == "yes" || v == "true"
		case "StateDirectory":
			u.state = v
		case "CapabilityBoundingSet":
			u.caps = strings.Fields(v)
		case "NoNewPrivileges":
			u.noNewPr = v == "yes" || v == "true"
		}
	}
	at := strings.HasPrefix(execStart, "@")
	for _, w := range strings.Fields(strings.TrimPrefix(execStart, "@")) {
		if strings.HasPrefix(w, "$") && !strings.HasPrefix(w, "${") {
			u.exec = append(u.exec, strings.Fields(u.env[w[1:]])...)
			continue
		}
		u.exec = append(u.exec, regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(w, func(m string) string {
			return u.env[m[2:len(m)-1]]
		}))
	}
	if len(u.exec) == 0 {
		r.t.Fatalf("%s: no ExecStart", name)
	}
	u.argv0 = u.exec[0]
	if at {
		u.argv0, u.exec = u.exec[1], append([]string{u.exec[0]}, u.exec[2:]...)
	}
	return u
}

func (r *throwaway) envFile(p string, optional bool, env map[string]string) {
	b, err := os.ReadFile(r.path(p))
	if err != nil {
		if optional && os.IsNotExist(err) {
			return
		}
		r.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
}

// splitQuoted splits Environment='s value: words, "double quoted" ones
// whole.
func splitQuoted(s string) []string {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return append(out, s[1:])
			}
			out = append(out, s[1:1+end])
			s = s[2+end:]
			continue
		}
		w, rest, _ := strings.Cut(s, " ")
		out = append(out, w)
		s = rest
	}
	return out
}

// runUnit starts a service unit's ExecStart as the unit runs it, chrooted
// into the throwaway root: its environment (Environment=,
// EnvironmentFile=), its user (root, or for DynamicUser=yes an unused uid
// owning its StateDirectory= in /var/lib), its capability bounding set
// and no_new_privs, with /proc mounted in a mount namespace of its own. listeners are passed as systemd passes a socket
// unit's (fds from 3 on, LISTEN_FDS, LISTEN_FDNAMES from names,
// LISTEN_PID). systemd's other sandboxing (ProtectSystem=, PrivateUsers=,
// the system call filter, ...) needs systemd as PID 1 and is left out. The
// stop function sends SIGTERM and checks the service exits 0, as the
// unit's stop does.
func (r *throwaway) runUnit(name string, listeners []*os.File, names []string) (stop func()) {
	r.t.Helper()
	u := r.readUnit(name)
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", helperRoot + "=" + r.root}
	switch {
	case u.dynamic:
		// A uid in systemd's DynamicUser range that no file in the
		// throwaway root belongs to.
		uid := 61184 + os.Getpid()%4000
		env = append(env, helperUID+"="+strconv.Itoa(uid), "HOME=/", "USER="+name, "LOGNAME="+name)
		if u.state != "" {
			// Where systemd makes a dynamic user's state directory:
			// /var/lib/private/NAME, /var/lib/NAME a link to it.
			// (systemd keeps private/ 0700 and opens it to the service
			// in its mount namespace; here it is simply 0755.)
			dir := r.path("var/lib/private/" + u.state)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				r.t.Fatal(err)
			}
			if err := os.Chmod(r.path("var/lib/private"), 0o755); err != nil {
				r.t.Fatal(err)
			}
			if err := os.Chown(dir, uid, uid); err != nil {
				r.t.Fatal(err)
			}
			link := r.path("var/lib/" + u.state)
			if _, err := os.Lstat(link); os.IsNotExist(err) {
				if err := os.Symlink("private/"+u.state, link); err != nil {
					r.t.Fatal(err)
				}
			}
		}
	case u.user == "root":
		env = append(env, "HOME=/root", "USER=root", "LOGNAME=root")
	default:
		r.t.Fatalf("%s runs as %s; this test runs units as root or a dynamic user", name, u.user)
	}
	var caps []string
	for _, c := range u.caps {
		if c == "all" {
			for n := 0; n <= 40; n++ {
				caps = append(caps, strconv.Itoa(n))
			}
			continue
		}
		n, ok := capNumbers[c]
		if !ok {
			r.t.Fatalf("%s: capability %s unknown to the test", name, c)
		}
		caps = append(caps, strconv.Itoa(n))
	}
	env = append(env, helperCaps+"="+strings.Join(caps, " "))
	if u.noNewPr || u.dynamic { // DynamicUser= implies NoNewPrivileges=
		env = append(env, helperNNP+"=1")
	}
	if len(listeners) > 0 {
		env = append(env, helperListen+"=1", "LISTEN_FDS="+strconv.Itoa(len(listeners)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	for k, v := range u.env {
		env = append(env, k+"="+v)
	}
	self, err := os.Executable()
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(self, append([]string{u.exec[0], u.argv0}, u.exec[1:]...)...)
	cmd.Env = append(env, helperProc+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	cmd.ExtraFiles = listeners
	log := &testpeer.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop = func() {
		r.t.Helper()
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				r.t.Errorf("%s (%s) ended with %v after SIGTERM:\n%s", name, strings.Join(u.exec, " "), err, log.String())
			}
		case <-time.After(guard):
			cmd.Process.Kill()
			<-exited
			r.t.Errorf("%s did not stop within %v of SIGTERM:\n%s", name, guard, log.String())
		}
		if r.t.Failed() {
			r.t.Logf("%s log:\n%s", name, log.String())
		}
	}
	r.t.Cleanup(stop)
	return stop
}

// runRunner starts qbox-queue.service, the queue runner (root, with the
// unit's one capability), as runUnit does.
func (r *throwaway) runRunner() (stop func()) {
	r.t.Helper()
	return r.runUnit("qbox-queue.service", nil, nil)
}

// socketOption returns a socket unit's value for key.
func (r *throwaway) socketOption(name, key string) string {
	r.t.Helper()
	b, err := os.ReadFile(r.path("usr/lib/systemd/system/" + name))
	if err != nil {
		r.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == key {
			return v
		}
	}
	r.t.Fatalf("%s has no %s=", name, key)
	return ""
}

// waitDelivered waits until the hub's maildir holds a message with each
// token and returns them by token. It looks again at each file the hub
// renames into new/ (inotify), within the guard.
func waitDelivered(t *testing.T, maildir string, tokens ...string) map[string]string {
	t.Helper()
	newDir := filepath.Join(maildir, "new")
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	in := os.NewFile(uintptr(fd), "inotify") // non-blocking: Close ends a Read
	defer in.Close()
	if _, err := syscall.InotifyAddWatch(fd, newDir, syscall.IN_MOVED_TO|syscall.IN_CREATE); err != nil {
		t.Fatalf("watching %s: %v", newDir, err)
	}
	events := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := in.Read(buf); err != nil {
				return
			}
			select {
			case events <- struct{}{}:
			default:
			}
		}
	}()
	deadline := time.NewTimer(guard)
	defer deadline.Stop()
	for {
		got := map[string]string{}
		es, _ := os.ReadDir(newDir)
		for _, e := range es {
			b, err := os.ReadFile(filepath.Join(newDir, e.Name()))
			if err != nil {
				continue
			}
			for _, tok := range tokens {
				if bytes.Contains(b, []byte(tok)) {
					got[tok] = string(b)
				}
			}
		}
		if len(got) == len(tokens) {
			return got
		}
		select {
		case <-events:
		case <-deadline.C:
			t.Fatalf("after %v the hub has %d of the messages %v", guard, len(got), tokens)
		}
	}
}

// repack makes a copy of a .deb with another version (and qbox-mta's
// Depends following it), for a real upgrade.
func repack(t *testing.T, deb, from, to string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if out, err := exec.Command("dpkg-deb", "-R", deb, tree).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -R: %v\n%s", err, out)
	}
	ctl := filepath.Join(tree, "DEBIAN", "control")
	b, err := os.ReadFile(ctl)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("Version: "+from+"\n"), []byte("Version: "+to+"\n"))
	b = bytes.ReplaceAll(b, []byte("(= "+from+")"), []byte("(= "+to+")"))
	if err := os.WriteFile(ctl, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, strings.Replace(filepath.Base(deb), from, to, 1))
	if o, err := exec.Command("dpkg-deb", "--root-owner-group", "-b", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -b: %v\n%s", err, o)
	}
	return out
}

// hostState is what must not change on the host while qbox-mta lives in
// the throwaway root.
func hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{"/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases", "/var/spool/qbox", "/etc/systemd/system/multi-user.target.wants/qbox-queue.service"} {
		st, err := os.Lstat(p)
		if err != nil {
			fmt.Fprintf(&b, "%s: absent\n", p)
			continue
		}
		target, _ := os.Readlink(p)
		sys := st.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s: %v ino %d size %d -> %q\n", p, st.Mode(), sys.Ino, st.Size(), target)
	}
	out, _ := exec.Command("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", "qbox-mta", "postfix").Output()
	b.Write(out)
	return b.String()
}

// TestMTAInThrowawayRoot: qbox-mta installed, mail queued while the hub is
// down and delivered by the runner, an upgrade, dpkg -r, dpkg -P and a
// reinstall, each keeping or delivering every message.
func TestMTAInThrowawayRoot(t *testing.T) {
	requireRoot(t)
	qboxDeb, mtaDeb, version := debs(t)
	before := hostState(t)
	defer func() {
		if after := hostState(t); after != before {
			t.Errorf("the host changed:\nbefore:\n%safter:\n%s", before, after)
		}
	}()

	r := newThrowaway(t)
	down := testpeer.ClosedAddr(t)
	hubDir := filepath.Join(t.TempDir(), "Maildir")
	hub := testpeer.StartServe(t, "--maildir", hubDir, "--qmqp", "127.0.0.1:0", "--qmtp", "")
	msg := func(tok string) string {
		return "To: postmaster@example.org\nSubject: " + tok + "\n\n" + tok + "\n"
	}
	token := testpeer.Token(t)

	// Installed: the links, the queue with its exact modes, the runner
	// enabled.
	r.dpkg("-i", qboxDeb, mtaDeb)
	r.checkQueueDirs()
	for link, want := range map[string]string{
		"usr/sbin/sendmail": "../bin/qbox", "usr/bin/mailq": "qbox", "usr/bin/newaliases": "qbox", "usr/lib/sendmail": "../sbin/sendmail",
	} {
		if got, err := os.Readlink(r.path(link)); err != nil || got != want {
			t.Errorf("/%s -> %q (%v), want %q", link, got, err, want)
		}
	}
	if !r.runnerEnabled() {
		t.Error("qbox-mta's postinst did not enable qbox-queue.service")
	}

	// The hub is down: a user's and root's mail wait in the system queue,
	// and sendmail exits 0.
	r.hub(down)
	r.sendmail(65534, "nobody", msg(token+"-user"))
	r.sendmail(0, "root", msg(token+"-root"))
	if drops, queued := r.queued(); drops+queued != 2 {
		t.Fatalf("after two messages with the hub down: %d drop file(s), %d queued; want 2 in all", drops, queued)
	}

	// An upgrade keeps both and the runner enabled.
	next := version + "+upgrade1"
	out := r.dpkg("-i", repack(t, qboxDeb, version, next), repack(t, mtaDeb, version, next))
	if drops, queued := r.queued(); drops+queued != 2 {
		t.Fatalf("after the upgrade %d drop file(s) and %d queued, want 2 in all\n%s", drops, queued, out)
	}
	r.checkQueueDirs()
	if !r.runnerEnabled() {
		t.Error("the upgrade disabled qbox-queue.service")
	}

	// The hub is up: the runner delivers both.
	r.hub(hub.QMQP)
	stop := r.runRunner()
	got := waitDelivered(t, hub.Maildir, token+"-user", token+"-root")
	stop()
	if !strings.Contains(got[token+"-user"], "invoked by uid 65534") {
		t.Errorf("the user's message lacks its Received line with uid 65534:\n%s", got[token+"-user"])
	}
	if drops, queued := r.queued(); drops+queued != 0 {
		t.Fatalf("after delivery %d drop file(s), %d queued; want none", drops, queued)
	}

	// Down again: a message waits, and dpkg -r keeps it.
	r.hub(down)
	r.sendmail(65534, "nobody", msg(token+"-kept"))
	out = r.dpkg("-r", "qbox-mta", "qbox")
	if drops, queued := r.queued(); drops+queued != 1 {
		t.Fatalf("after dpkg -r: %d drop file(s), %d queued; want 1\n%s", drops, queued, out)
	}
	if !strings.Contains(out, "1 message(s) stay queued") {
		t.Errorf("dpkg -r did not say the message stays:\n%s", out)
	}
	if _, err := os.Lstat(r.path("usr/sbin/sendmail")); err == nil {
		t.Error("/usr/sbin/sendmail is left after dpkg -r")
	}
	if r.runnerEnabled() {
		t.Error("qbox-queue.service is still enabled after dpkg -r")
	}
	// Purge keeps a queue that holds mail, and says so.
	out = r.dpkg("-P", "qbox-mta", "qbox")
	if drops, queued := r.queued(); drops+queued != 1 {
		t.Fatalf("after dpkg -P: %d drop file(s), %d queued; want 1\n%s", drops, queued, out)
	}
	if !strings.Contains(out, "still holds 1 message(s), so it is kept") {
		t.Errorf("dpkg -P did not say the queue is kept:\n%s", out)
	}

	// Installed again: enabled again, and the runner delivers what was
	// left.
	r.dpkg("-i", qboxDeb, mtaDeb)
	r.checkQueueDirs()
	if !r.runnerEnabled() {
		t.Error("installing qbox-mta again did not enable qbox-queue.service")
	}
	r.hub(hub.QMQP)
	stop = r.runRunner()
	waitDelivered(t, hub.Maildir, token+"-kept")
	stop()
	if drops, queued := r.queued(); drops+queued != 0 {
		t.Fatalf("after the reinstall's delivery %d drop file(s), %d queued; want none", drops, queued)
	}

	// Purge with the queue empty removes it.
	out = r.dpkg("-P", "qbox-mta", "qbox")
	if _, err := os.Lstat(r.path("var/spool/qbox")); err == nil {
		t.Errorf("dpkg -P left the empty queue /var/spool/qbox:\n%s", out)
	}
}

// TestServeUnitInThrowawayRoot: qbox.service started as qbox-qmqp.socket
// activates it (the socket is bound on 127.0.0.1:0 here, not port 628),
// as its dynamic user with no capability, takes a message from the
// installed qbox inject and stores it in the maildir in its state
// directory.
func TestServeUnitInThrowawayRoot(t *testing.T) {
	requireRoot(t)
	qboxDeb, _, _ := debs(t)
	r := newThrowaway(t)
	r.dpkg("-i", qboxDeb)
	for key, want := range map[string]string{"FileDescriptorName": "qmqp", "Service": "qbox.service", "ListenStream": "127.0.0.1:628"} {
		if got := r.socketOption("qbox-qmqp.socket", key); got != want {
			t.Errorf("qbox-qmqp.socket: %s=%s, want %s", key, got, want)
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	sock, err := l.(*net.TCPListener).File()
	l.Close() // sock, a duplicate, keeps listening
	if err != nil {
		t.Fatal(err)
	}
	stop := r.runUnit("qbox.service", []*os.File{sock}, []string{"qmqp"})
	sock.Close()

	token := testpeer.Token(t)
	cmd := exec.Command("/usr/bin/qbox", "inject", "-s", addr, "-f", "nobody@example.org", "postmaster@example.org")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "USER=nobody", "LOGNAME=nobody"}
	cmd.Stdin = strings.NewReader("Subject: " + token + "\n\n" + token + "\n")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: r.root, Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qbox inject into the socket-activated serve: %v\n%s", err, out)
	}
	// K came only once the message was durable: it is there now.
	newDir := r.path("var/lib/qbox/Maildir/new")
	es, err := os.ReadDir(newDir)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(newDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(token)) {
			found++
			st, _ := e.Info()
			if sys := st.Sys().(*syscall.Stat_t); sys.Uid == 0 || st.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: uid %d mode %04o; want the dynamic user's, 0600", e.Name(), sys.Uid, st.Mode().Perm())
			}
		}
	}
	if found != 1 {
		t.Errorf("the maildir holds %d copies of the message, want 1", found)
	}
	stop()

	// Purge keeps a maildir that holds mail, and says so.
	out := r.dpkg("-P", "qbox")
	if !strings.Contains(out, "holds 1 received message(s); it is kept") {
		t.Errorf("dpkg -P qbox did not say the maildir is kept:\n%s", out)
	}
	if es, err := os.ReadDir(newDir); err != nil || len(es) != found {
		t.Errorf("after dpkg -P qbox the maildir holds %d message(s) (%v), want %d", len(es), err, found)
	}
	// Once the mail is read, a purge removes it.
	if err := os.RemoveAll(newDir); err != nil {
		t.Fatal(err)
	}
	r.dpkg("-i", qboxDeb)
	out = r.dpkg("-P", "qbox")
	for _, p := range []string{"var/lib/private/qbox", "var/lib/qbox"} {
		if _, err := os.Lstat(r.path(p)); err == nil {
			t.Errorf("dpkg -P qbox left /%s with no mail in it:\n%s", p, out)
		}
	}
}
