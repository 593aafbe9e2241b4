//go:build peers

package testpeer

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests are guests (issue 28): starting and stopping a private Postfix
// leaves the host's /etc/postfix byte for byte as it was, and a Postfix
// already running keeps running, untouched.
//
// "Already running" is checked on two Postfixes. A stand-in, always: a
// second private instance started before and stopped after, whose master
// must keep its pid and still deliver mail after the other instance came
// and went; it runs on every machine, including CI, where the host's
// Postfix is installed but neither configured nor running. And the host's
// own Postfix, when one runs: the master named by the host's
// /var/spool/postfix/pid/master.pid (in this process's mount namespace)
// must be the same, living process after as before. The test never starts,
// stops or configures the host's Postfix: it only reads its pid file and
// /proc.
func TestPrivatePostfixLeavesHostAlone(t *testing.T) {
	before := tree(t, "/etc/postfix")
	host := hostMaster(t)
	if host != 0 {
		t.Logf("the host's Postfix runs (master %d): it is checked too", host)
	} else {
		t.Logf("no host Postfix runs: the stand-in alone plays it")
	}

	standIn := StartPrivatePostfix(t)
	p := StartPrivatePostfix(t)
	if p.SMTPAddr == standIn.SMTPAddr || p.QMQPAddr == standIn.QMQPAddr || p.Maildir == standIn.Maildir {
		t.Fatalf("two instances share a port or a mailbox: %+v %+v", p, standIn)
	}
	// The bind mounts are the instances' own: this process (in the
	// host's mount namespace) sees none over Postfix's directories.
	if m := postfixMounts(t); len(m) > 0 {
		t.Fatalf("mounts over Postfix's directories visible in the host's namespace:\n%s", strings.Join(m, "\n"))
	}
	token := Token(t)
	sendSMTP(t, p, token)
	p.WaitFor(t, token, 1, time.Minute)

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive(p.masterPID) {
		t.Errorf("the stopped instance's master %d still runs", p.masterPID)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("the stopped instance's directory %s is still there (%v)", p.dir, err)
	}

	if after := tree(t, "/etc/postfix"); !slices.Equal(before, after) {
		t.Errorf("/etc/postfix changed:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	if !alive(standIn.masterPID) || masterPID(t, standIn) != standIn.masterPID {
		t.Fatalf("the stand-in's master %d did not survive the other instance's start and stop", standIn.masterPID)
	}
	token = Token(t) + "-stand-in"
	sendSMTP(t, standIn, token)
	standIn.WaitFor(t, token, 1, time.Minute)
	if host != 0 && (!alive(host) || hostMaster(t) != host) {
		t.Errorf("the host's Postfix master %d does not run any more (now: %d)", host, hostMaster(t))
	}
}

// tree describes every file under root: path, type, mode, owner, and the
// SHA-256 of a file's bytes or a link's target.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		what := ""
		switch {
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			what = fmt.Sprintf("sha256:%x", sha256.Sum256(data))
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			what = "-> " + target
		}
		out = append(out, fmt.Sprintf("%s %v %d:%d %s", path, info.Mode(), st.Uid, st.Gid, what))
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", root, err)
	}
	return out
}

// hostMaster is the pid of the host's running Postfix master, or 0: the
// pid in /var/spool/postfix/pid/master.pid as this process sees it, if that
// process lives, is Postfix's master, and is in this process's mount
// namespace (not a private instance).
func hostMaster(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/var/spool/postfix/pid/master.pid")
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || !alive(pid) {
		return 0
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if strings.TrimSpace(string(comm)) != "master" || ns != self {
		return 0
	}
	return pid
}

// masterPID is the pid in an instance's own pid file.
func masterPID(t *testing.T, p *Postfix) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(p.dir, "spool", "pid", "master.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// postfixMounts lists this process's mounts on or under Postfix's
// directories.
func postfixMounts(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mountpoint ...
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		for _, d := range []string{"/etc/postfix", "/var/spool/postfix", "/var/lib/postfix"} {
			if fields[4] == d || strings.HasPrefix(fields[4], d+"/") {
				out = append(out, s.Text())
			}
		}
	}
	return out
}

// sendSMTP sends one message containing token to an instance's smtpd.
func sendSMTP(t *testing.T, p *Postfix, token string) {
	t.Helper()
	msg := "From: s@" + p.Domain + "\r\nTo: r@" + p.Domain + "\r\nSubject: " + token + "\r\n\r\n" + token + "\r\n"
	if err := smtp.SendMail(p.SMTPAddr, nil, "s@"+p.Domain, []string{"r@" + p.Domain}, []byte(msg)); err != nil {
		t.Fatalf("SMTP to %s: %v", p.SMTPAddr, err)
	}
}
