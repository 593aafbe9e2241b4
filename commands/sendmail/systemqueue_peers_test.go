//go:build peers

package sendmail

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// localUser is an unprivileged user for a test: a uid of its own, in the
// group nogroup, with no entry in the password database (useradd would
// change the host's /etc/passwd, and tests never change the host's
// configuration). Its name only goes into USER and LOGNAME, where
// sendmail takes the sender's name from.
type localUser struct {
	name     string
	uid, gid uint32
	home     string
}

// addUser returns a user whose uid (one per suffix, "a" or "b", and per
// test process) no account has, with the given home (not created).
func addUser(t *testing.T, suffix, home string) localUser {
	t.Helper()
	name := fmt.Sprintf("qbx%d%s", os.Getpid()%100000, suffix)
	uid := 2_000_000_000 + uint32(os.Getpid()%100000)*4 + uint32(strings.Index("ab", suffix)+1)
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		t.Fatalf("uid %d belongs to %s: pick another", uid, u.Username)
	}
	gid := 65534
	if g, err := user.LookupGroup("nogroup"); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	}
	return localUser{name: name, uid: uid, gid: uint32(gid), home: home}
}

// as runs prog as u with env, stdin and the working directory dir.
func (u localUser) run(t *testing.T, dir string, env []string, stdin string, prog string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(nil), env...)
	cmd.Env = append(cmd.Env, "HOME="+u.home, "USER="+u.name, "LOGNAME="+u.name)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return testpeer.ExitCode(t, cmd.Run()), out.String()
}

// publicDir makes a directory every user may enter (t.TempDir is 0700).
func publicDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	d, err := os.MkdirTemp("", "qbox-sysq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, mode); err != nil {
		t.Fatal(err)
	}
	return d
}

func mkdirMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// makeSystemQueue lays out the system queue as make install does.
func makeSystemQueue(t *testing.T, root string) spool.SystemQueue {
	t.Helper()
	mkdirMode(t, root, 0o755)
	q := spool.SystemQueue{Root: root}
	mkdirMode(t, q.DropDir(), 0o733|os.ModeSticky)
	mkdirMode(t, q.QueueDir(), 0o700)
	return q
}

// TestSystemQueueForEveryUser: with the hub down, two unprivileged
// users (one whose home is not writable, as www-data's) queue into the
// system queue with exit 0; neither can read or remove the other's file;
// a symlink, a FIFO, a hard link and garbage planted in the drop
// directory are never delivered; root's pickup moves both messages into
// the queue with the submitting uid in a Received line, and root's
// sendmail -q delivers each exactly once through Postfix's qmqpd.
func TestSystemQueueForEveryUser(t *testing.T) {
	testpeer.RequireRoot(t, "to run commands as other users")
	pf := testpeer.StartPostfix(t)
	top := publicDir(t, 0o755)
	// The binary, where the users may run it.
	bin := filepath.Join(top, "bin")
	mkdirMode(t, bin, 0o755)
	exe := filepath.Join(bin, "qbox")
	copyFile(t, testpeer.Binary(t), exe, 0o755)
	sendmail := filepath.Join(bin, "sendmail")
	if err := os.Symlink("qbox", sendmail); err != nil {
		t.Fatal(err)
	}
	qmailHome := filepath.Join(top, "qmail")
	mkdirMode(t, qmailHome, 0o755)
	q := makeSystemQueue(t, filepath.Join(top, "spool"))

	writableHome := filepath.Join(top, "home-a")
	alice := addUser(t, "a", writableHome)
	mkdirMode(t, writableHome, 0o755)
	if err := os.Chown(writableHome, int(alice.uid), int(alice.gid)); err != nil {
		t.Fatal(err)
	}
	rootHome := filepath.Join(top, "home-b") // root's, as /var/www is for www-data
	mkdirMode(t, rootHome, 0o755)
	bob := addUser(t, "b", rootHome)

	tok := testpeer.Token(t)
	down := []string{"QBOX_SYSTEM_QUEUE=" + q.Root, "QMAILHOME=" + qmailHome, "QMQPSERVERS=" + testpeer.ClosedAddr(t),
		"QMAILDEFAULTHOST=example.test", "QMAILDEFAULTDOMAIN=example.test", "QMAILIDHOST=example.test"}
	for _, u := range []localUser{alice, bob} {
		msg := fmt.Sprintf("To: sysq@example.test\nSubject: %s from %s\n\nfrom %s\n", tok, u.name, u.name)
		code, out := u.run(t, top, down, msg, sendmail, "-t", "-i")
		if code != 0 || out != "" {
			t.Fatalf("%s: exit %d, output %q; want 0 and silence", u.name, code, out)
		}
	}
	if _, err := os.Stat(filepath.Join(rootHome, ".qbox")); err == nil {
		t.Errorf("a spool was made in the unwritable home")
	}

	// One file each, owned by its sender, mode 0600.
	files := map[uint32]string{}
	entries, _ := os.ReadDir(q.DropDir())
	for _, e := range entries {
		st, err := os.Lstat(filepath.Join(q.DropDir(), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != 0o600 || !st.Mode().IsRegular() {
			t.Errorf("drop file %s: mode %v, want a regular file 0600", e.Name(), st.Mode())
		}
		files[sys.Uid] = filepath.Join(q.DropDir(), e.Name())
	}
	if len(entries) != 2 || files[alice.uid] == "" || files[bob.uid] == "" {
		t.Fatalf("drop directory holds %d entries (%v), want one file of each user", len(entries), files)
	}
	// Neither may read, remove or list the other's mail.
	for _, c := range []struct {
		u     localUser
		other string
	}{{alice, files[bob.uid]}, {bob, files[alice.uid]}} {
		if code, out := c.u.run(t, top, nil, "", "/bin/cat", c.other); code == 0 {
			t.Errorf("%s read another user's message: %q", c.u.name, out)
		}
		if code, _ := c.u.run(t, top, nil, "", "/bin/rm", "-f", c.other); code == 0 {
			t.Errorf("%s removed another user's message", c.u.name)
		}
		if _, err := os.Stat(c.other); err != nil {
			t.Fatalf("%s: %v", c.other, err)
		}
		if code, out := c.u.run(t, top, nil, "", "/bin/ls", q.DropDir()); code == 0 {
			t.Errorf("%s listed the drop directory: %q", c.u.name, out)
		}
	}

	// Alice plants what a queue runner must never read as mail.
	secret := filepath.Join(writableHome, "secret")
	code, out := alice.run(t, top, nil, "", "/bin/sh", "-c",
		"printf 'qbox-maildrop 1\\nFalice@example.test\\nTsysq@example.test\\n\\nplanted "+tok+"\\n' > "+secret+" && "+
			"ln -s /etc/shadow "+q.DropDir()+"/symlink && "+
			"ln -s "+secret+" "+q.DropDir()+"/symlink-to-drop && "+
			"mkfifo "+q.DropDir()+"/fifo && "+
			"ln "+secret+" "+q.DropDir()+"/hardlink && "+
			"echo garbage > "+q.DropDir()+"/garbage && "+
			"ln -s /etc/shadow "+q.DropDir()+"/.dotlink")
	if code != 0 {
		t.Fatalf("planting: exit %d: %s", code, out)
	}

	res, err := spool.PickUp(q, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	uids := map[uint32]bool{}
	for _, p := range res.Picked {
		uids[p.UID] = true
	}
	if len(res.Picked) != 2 || !uids[alice.uid] || !uids[bob.uid] {
		t.Errorf("picked %+v, want one message of each user", res.Picked)
	}
	refused := map[string]string{}
	for _, r := range res.Refused {
		refused[r.Name] = r.Reason
	}
	for _, name := range []string{"symlink", "symlink-to-drop", "fifo", "hardlink", "garbage", ".dotlink"} {
		if refused[name] == "" {
			t.Errorf("%s not reported as refused (refused: %v)", name, refused)
		}
	}
	if left, _ := os.ReadDir(q.DropDir()); len(left) != 0 {
		t.Errorf("drop directory not emptied: %d entries left", len(left))
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("the hard link's other name is gone: %v", err)
	}
	queued := spoolCopies(t, q.QueueDir())
	if len(queued) != 2 {
		t.Fatalf("%d messages in the queue, want 2", len(queued))
	}
	for _, b := range queued {
		if !bytes.Contains(b, []byte(fmt.Sprintf("Received: (qbox invoked by uid %d);", alice.uid))) &&
			!bytes.Contains(b, []byte(fmt.Sprintf("Received: (qbox invoked by uid %d);", bob.uid))) {
			t.Errorf("queued file without the submitter's uid:\n%s", b)
		}
	}

	// Two more, still in the drop directory: root's sendmail -q picks
	// them up itself, then delivers all four, each once.
	for _, u := range []localUser{alice, bob} {
		msg := fmt.Sprintf("To: sysq@example.test\nSubject: %s again from %s\n\nagain\n", tok, u.name)
		if code, out := u.run(t, top, down, msg, sendmail, "-t", "-i"); code != 0 || out != "" {
			t.Fatalf("%s: exit %d, output %q", u.name, code, out)
		}
	}
	code, out = alice.run(t, top, nil, "", "/bin/ln", "-s", "/etc/shadow", q.DropDir()+"/late-symlink")
	if code != 0 {
		t.Fatalf("planting: %s", out)
	}
	up := append([]string{}, down...)
	up[2] = "QMQPSERVERS=" + pf.QMQPAddr
	code, _, stderr := run(t, sendmail, up, "", "-q")
	if code != 0 || !strings.Contains(stderr, "late-symlink: a symbolic link") {
		t.Fatalf("sendmail -q: exit %d, stderr %q; want 0 and the planted symlink reported", code, stderr)
	}
	got := pf.WaitFor(t, tok, 4, 30*time.Second)
	if len(got) != 4 {
		t.Errorf("Postfix has %d messages, want 4", len(got))
	}
	for _, m := range got {
		if bytes.Contains(m, []byte("planted")) {
			t.Errorf("a planted file was delivered:\n%s", m)
		}
		if !bytes.Contains(m, []byte("Received: (qbox invoked by uid ")) {
			t.Errorf("delivered without the submitter's uid:\n%s", m)
		}
	}
	if left, _ := os.ReadDir(q.DropDir()); len(left) != 0 {
		t.Errorf("drop directory not emptied by sendmail -q: %d entries left", len(left))
	}
	if left := queuedFiles(t, q.QueueDir()); left != 0 {
		t.Errorf("%d recipients still queued after the flush", left)
	}

	// No queue can take it (the drop directory lost its sticky bit, the
	// home is not writable): exit 75 and both reasons, never a silent 0.
	if err := os.Chmod(q.DropDir(), 0o733); err != nil {
		t.Fatal(err)
	}
	code, out = bob.run(t, top, down, "Subject: lost?\n\nx\n", sendmail, "root")
	if code != 75 || !strings.Contains(out, "sticky") || !strings.Contains(out, ".qbox") || !strings.Contains(out, "could not be queued") {
		t.Errorf("nowhere to queue: exit %d, %q; want 75 naming both queues", code, out)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
