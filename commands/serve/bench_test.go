package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testpeer"
)

// qmqpSourceRate runs qmqp-source -s 20 -m 5000 -l 2000 against addr and
// returns messages per second.
func qmqpSourceRate(b *testing.B, addr, to string) float64 {
	b.Helper()
	src := testpeer.Require(b, "qmqp-source", "postfix")
	start := time.Now()
	out, err := exec.Command(src, "-s", "20", "-m", "5000", "-l", "2000", "-f", "bench@example.test", "-t", to, addr).CombinedOutput()
	if err != nil {
		b.Fatalf("qmqp-source into %s: %v\n%s", addr, err, out)
	}
	return 5000 / time.Since(start).Seconds()
}

// The table's line for serve: qbox serve --maildir (fsync on) under QMQP
// (qmqp-source -s 20 -m 5000 -l 2000) and under QMTP (flush-maildir sending
// 5000 messages of 2000 bytes over one connection), beside Postfix's qmqpd
// (its fsync'd queue) under the same QMQP load, Postfix's qmqp-sink (stores
// nothing), and this machine's own ceiling for durable 2 KB files (see
// diskCeiling), with and without fsync. Three rounds, each measuring
// everything once, and the median of each figure, so one noisy round
// does not decide.
//
// Nothing is deleted until all rounds are over: this machine's ext4 checks
// recently deleted inodes on every allocation, so a run that follows
// thousands of deletions is slowed by them (whoever made them). The
// messages flush-maildir sends (and removes) are kept in /dev/shm for the
// same reason. Postfix still pays for its own deletions (its queue files
// are removed after delivery) and the next round waits until Postfix has
// delivered the previous one, so neither competes with the other.
func BenchmarkServeBesideDiskAndPostfix(b *testing.B) {
	const rounds, n, size = 3, 5000, 2000
	pf := testpeer.StartPostfix(b)
	sink := testpeer.QmqpSink(b)
	bin := testpeer.Binary(b)
	dir := b.TempDir()
	s := startServe(b, "--maildir", dir)
	token := testpeer.Token(b)
	var qmqpRates, qmtpRates, pfRates, sinkRates, syncRates, noSyncRates []float64
	for b.Loop() {
		for r := 1; r <= rounds; r++ {
			syncRates = append(syncRates, diskCeiling(b, b.TempDir(), n, size, true))
			noSyncRates = append(noSyncRates, diskCeiling(b, b.TempDir(), n, size, false))
			syscall.Sync() // its writeback is not charged to the next figure
			src := fillFlushMaildir(b, n, size)
			qmqp := func() { qmqpRates = append(qmqpRates, qmqpSourceRate(b, s.qmqp, "bench@example.test")) }
			qmtp := func() { qmtpRates = append(qmtpRates, flushMaildirRate(b, bin, src, s.qmtp, n)) }
			if r%2 == 1 { // each goes first in turn
				qmqp()
				qmtp()
			} else {
				qmtp()
				qmqp()
			}
			sinkRates = append(sinkRates, qmqpSourceRate(b, sink, "bench@example.test"))
			pfRates = append(pfRates, qmqpSourceRate(b, pf.QMQPAddr, token+"@"+pf.Domain))
			pf.WaitFor(b, token, 5000*r, 120*time.Second)
		}
	}
	cleanPostfixMaildir(b, pf, token, 5000*rounds)
	if got, want := countFiles(b, filepath.Join(dir, "new")), 2*n*rounds*b.N; got != want {
		b.Fatalf("%d files stored, want %d", got, want)
	}
	qmqp, qmtp, postfix := median(qmqpRates), median(qmtpRates), median(pfRates)
	disk, noSync := median(syncRates), median(noSyncRates)
	b.ReportMetric(qmqp, "qmqp-msgs/s")
	b.ReportMetric(qmtp, "qmtp-msgs/s")
	b.ReportMetric(qmtp/qmqp, "qmtp/qmqp")
	b.ReportMetric(postfix, "postfix-qmqpd-msgs/s")
	b.ReportMetric(qmqp/postfix, "qmqp/postfix")
	b.ReportMetric(median(sinkRates), "qmqp-sink-msgs/s")
	b.ReportMetric(disk, "disk-fsync-files/s")
	b.ReportMetric(noSync, "disk-nofsync-files/s")
	b.ReportMetric(qmqp/disk, "qmqp/disk")
	b.ReportMetric(qmtp/disk, "qmtp/disk")
}

// fillFlushMaildir makes a maildir of n messages of size bytes (64-byte
// lines), as qmail-local leaves them for flush-maildir, in /dev/shm when
// it can (see BenchmarkServeBesideDiskAndPostfix).
func fillFlushMaildir(b *testing.B, n, size int) string {
	b.Helper()
	root, err := os.MkdirTemp("/dev/shm", "qbox-bench-")
	if err != nil {
		root = b.TempDir()
	} else {
		b.Cleanup(func() { os.RemoveAll(root) })
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0700); err != nil {
			b.Fatal(err)
		}
	}
	line := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"
	body := []byte("Subject: bench\n\n" + strings.Repeat(line, size/len(line)+1))[:size]
	body[size-1] = '\n'
	for i := range n {
		head := fmt.Sprintf("Return-Path: <bench@example.test>\nDelivered-To: ppp-r%05d@example.test\n", i)
		name := filepath.Join(root, "new", fmt.Sprintf("1700000000.b%05d.bench", i))
		if err := os.WriteFile(name, append([]byte(head), body...), 0600); err != nil {
			b.Fatal(err)
		}
	}
	return root
}

// flushMaildirRate runs `qbox flush-maildir` from src into the QMTP server
// at addr and returns messages per second; every message must be taken.
func flushMaildirRate(b *testing.B, bin, src, addr string, n int) float64 {
	b.Helper()
	start := time.Now()
	out, err := exec.Command(bin, "flush-maildir", src, "ppp-", addr).CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		b.Fatalf("flush-maildir into %s: %v\n%s", addr, err, tail(string(out), 2000))
	}
	if left, _ := os.ReadDir(filepath.Join(src, "new")); len(left) != 0 {
		b.Fatalf("flush-maildir left %d of %d messages\n%s", len(left), n, tail(string(out), 2000))
	}
	return float64(n) / elapsed.Seconds()
}

// diskCeiling is this machine's own ceiling for durable 2 KB files, what
// any maildir store on it can reach at best: 20 writers, each file
// created unnamed in new/ (O_TMPFILE), written, fsync'd, linked into new/
// and new/ fsync'd; with fsync false the same without either fsync. It
// returns files per second. It shares no code with the store.
func diskCeiling(b *testing.B, dir string, n, size int, fsync bool) float64 {
	b.Helper()
	const writers = 20
	newDir := filepath.Join(dir, "new")
	if err := os.MkdirAll(newDir, 0700); err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), size)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if err := durableFile(newDir, "f"+strconv.FormatInt(i, 10), data, fsync); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return float64(n) / elapsed.Seconds()
}

// linkat is linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW):
// from a /proc/self/fd entry it names an unnamed file.
func linkat(from, to string) error {
	f, err := syscall.BytePtrFromString(from)
	if err != nil {
		return err
	}
	t, err := syscall.BytePtrFromString(to)
	if err != nil {
		return err
	}
	const atFDCWD, atSymlinkFollow = -100, 0x400
	cwd := atFDCWD
	if _, _, errno := syscall.Syscall6(syscall.SYS_LINKAT, uintptr(cwd), uintptr(unsafe.Pointer(f)),
		uintptr(cwd), uintptr(unsafe.Pointer(t)), atSymlinkFollow, 0); errno != 0 {
		return &os.LinkError{Op: "linkat", Old: from, New: to, Err: errno}
	}
	return nil
}

// durableFile is one file of diskCeiling.
func durableFile(newDir, name string, data []byte, fsync bool) error {
	const oTmpfile = 0x400000 | syscall.O_DIRECTORY
	fd, err := syscall.Open(newDir, oTmpfile|syscall.O_WRONLY|syscall.O_CLOEXEC, 0600)
	if err != nil {
		return fmt.Errorf("O_TMPFILE in %s: %w", newDir, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if fsync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := linkat("/proc/self/fd/"+strconv.Itoa(fd), filepath.Join(newDir, name)); err != nil {
		return err
	}
	if !fsync {
		return nil
	}
	d, err := os.Open(newDir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// cleanPostfixMaildir removes the benchmark's mail from the Postfix
// maildir other tests search, once Postfix has delivered it (bounded).
func cleanPostfixMaildir(b *testing.B, pf *testpeer.Postfix, token string, n int) {
	deadline := time.Now().Add(60 * time.Second)
	removed := 0
	for removed < n && time.Now().Before(deadline) {
		for _, sub := range []string{"new", "cur"} {
			entries, _ := os.ReadDir(filepath.Join(pf.Maildir, sub))
			for _, e := range entries {
				p := filepath.Join(pf.Maildir, sub, e.Name())
				head := make([]byte, 512)
				f, err := os.Open(p)
				if err != nil {
					continue
				}
				n, _ := f.Read(head)
				f.Close()
				if bytes.Contains(head[:n], []byte(token)) && os.Remove(p) == nil {
					removed++
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// peakRSS returns a process's peak resident set size in MiB (VmHWM).
func peakRSS(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// patternReader yields n bytes of mail-like lines without holding them.
type patternReader struct{ left int64 }

var patternLine = []byte(strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 2) + "\n")

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	lim := len(b)
	if int64(lim) > p.left {
		lim = int(p.left)
	}
	n := 0
	for n < lim {
		n += copy(b[n:lim], patternLine)
	}
	p.left -= int64(n)
	return n, nil
}

const gib = 1 << 30

// A 1 GiB message through QMQP and through QMTP: serve's peak RSS
// (target 64 MiB), the message streamed to disk and copied file to file.
func BenchmarkOneGiBMessageRSS(b *testing.B) {
	for _, p := range []string{"QMQP", "QMTP"} {
		b.Run(p, func(b *testing.B) {
			dir := b.TempDir()
			s := startServe(b, "--maildir", dir, "--max-size", "2G", "--timeout", "120s")
			env := proto.Envelope{Sender: "big@example.test", Recipients: []string{"r@example.test"}}
			for b.Loop() {
				var r proto.Reply
				var err error
				if p == "QMQP" {
					c := &qmqp.Client{Servers: []string{s.qmqp}, Timeout: 120 * time.Second}
					r, err = c.Send(context.Background(), env, &patternReader{left: gib}, gib)
				} else {
					r, err = sendQMTPStream(s.qmtp, env, &patternReader{left: gib}, gib)
				}
				if err != nil || r.Status != proto.OK {
					b.Fatalf("%s 1 GiB: %q %v", p, r.String(), err)
				}
			}
			b.StopTimer()
			b.ReportMetric(peakRSS(b, s.cmd.Process.Pid), "peak-RSS-MiB")
			b.ReportMetric(64, "target-MiB")
			files := readMaildirNames(b, dir)
			for _, f := range files {
				if st, err := os.Stat(f); err != nil || st.Size() < gib {
					b.Fatalf("stored file %s: %v", f, err)
				}
				os.Remove(f)
			}
		})
	}
}

func readMaildirNames(b *testing.B, dir string) []string {
	names, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	if len(names) == 0 {
		b.Fatal("nothing stored")
	}
	return names
}

// sendQMTPStream sends one QMTP package (LF encoding) streaming size bytes
// from msg and reads the recipient's reply.
func sendQMTPStream(addr string, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return proto.Reply{}, err
	}
	defer c.Close()
	bw := bufio.NewWriterSize(c, 256<<10)
	nw := netstring.NewWriter(bw)
	nw.WriteHeader(size + 1)
	bw.WriteByte('\n')
	if _, err := io.CopyN(bw, msg, size); err != nil {
		return proto.Reply{}, err
	}
	nw.WriteTrailer()
	nw.WriteString(env.Sender)
	var list []byte
	for _, r := range env.Recipients {
		list = netstring.AppendString(list, r)
	}
	nw.WriteBytes(list)
	if err := bw.Flush(); err != nil {
		return proto.Reply{}, err
	}
	rs, err := readReplies(c, 1, 120*time.Second)
	if err != nil {
		return proto.Reply{}, err
	}
	return rs[0], nil
}

// 200 sessions in flight at once, each mid-way through a 1 MiB message:
// serve's peak RSS (target 128 MiB).
func BenchmarkConcurrentSessionsRSS(b *testing.B) {
	const sessions, size = 200, 1 << 20
	dir := b.TempDir()
	s := startServe(b, "--maildir", dir, "--max-conns", "256")
	msg := make([]byte, size)
	(&patternReader{left: size}).Read(msg)
	var items []byte
	items = netstring.Append(items, msg)
	items = netstring.AppendString(items, "a@example.test")
	items = netstring.AppendString(items, "b@example.test")
	pkg := netstring.Append(nil, items)
	for b.Loop() {
		var connected, wg sync.WaitGroup
		release := make(chan struct{})
		errs := make(chan error, sessions)
		for range sessions {
			connected.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", s.qmqp)
				if err != nil {
					connected.Done()
					errs <- err
					return
				}
				defer c.Close()
				_, err = c.Write(pkg[:len(pkg)/2])
				connected.Done()
				if err != nil {
					errs <- err
					return
				}
				<-release // all sessions hold half a message now
				if _, err := c.Write(pkg[len(pkg)/2:]); err != nil {
					errs <- err
					return
				}
				rs, err := readReplies(c, 1, 60*time.Second)
				if err != nil || rs[0].Status != proto.OK {
					errs <- fmt.Errorf("reply %s %v", fmtReplies(rs), err)
				}
			}()
		}
		connected.Wait()
		time.Sleep(500 * time.Millisecond) // the server reads what was sent
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(peakRSS(b, s.cmd.Process.Pid), "peak-RSS-MiB")
	b.ReportMetric(128, "target-MiB")
	if n := countFiles(b, filepath.Join(dir, "new")); n != sessions*b.N {
		b.Fatalf("%d files stored, want %d", n, sessions*b.N)
	}
}

// largestEnvelope is the largest legal envelope at serve's defaults:
// 10,000 recipients (--max-recipients) of 1,000 bytes (the address
// limit), with a 1,000-byte sender.
func largestEnvelope() proto.Envelope {
	addr := func(i int) string {
		local := fmt.Sprintf("r%05d.", i)
		return local + strings.Repeat("x", 1000-len(local)-len("@example.test")) + "@example.test"
	}
	env := proto.Envelope{Sender: addr(99999)}
	for i := range 10000 {
		env.Recipients = append(env.Recipients, addr(i))
	}
	return env
}

// --max-conns (200) sessions at once, each sending the largest legal
// envelope at the defaults, all held just before their final byte so
// every envelope is in the server at the same time: serve's peak RSS,
// beside the target of 128 MiB. (Before --envelope-memory this took
// 2.5 GiB.) Envelopes that do not fit in --envelope-memory get Z
// (QMQP) or their recipients beyond it Z (QMTP); the figures say how
// many recipients got K.
func BenchmarkLargestEnvelopesRSS(b *testing.B) {
	const sessions = proto.DefaultMaxConns
	env := largestEnvelope()
	msg := []byte("Subject: the largest envelope\n\nbody\n")
	for _, p := range []string{"QMQP", "QMTP"} {
		b.Run(p, func(b *testing.B) {
			dir := b.TempDir()
			s := startServe(b, "--maildir", dir, "--timeout", "300s")
			var pkg []byte
			addr := s.qmqp
			if p == "QMQP" {
				var items []byte
				items = netstring.Append(items, msg)
				items = netstring.AppendString(items, env.Sender)
				for _, r := range env.Recipients {
					items = netstring.AppendString(items, r)
				}
				pkg = netstring.Append(nil, items)
			} else {
				pkg = qmtpPackage(msg, false, env.Sender, env.Recipients...)
				addr = s.qmtp
			}
			nReplies := 1
			if p == "QMTP" {
				nReplies = len(env.Recipients)
			}
			var accepted int64
			for b.Loop() {
				var sent, wg sync.WaitGroup
				var mu sync.Mutex
				release := make(chan struct{})
				errs := make(chan error, sessions)
				for range sessions {
					sent.Add(1)
					wg.Add(1)
					go func() {
						defer wg.Done()
						c, err := net.Dial("tcp", addr)
						if err != nil {
							sent.Done()
							errs <- err
							return
						}
						defer c.Close()
						c.SetWriteDeadline(time.Now().Add(300 * time.Second))
						_, err = c.Write(pkg[:len(pkg)-1])
						sent.Done()
						if err != nil {
							errs <- err
							return
						}
						<-release // every session's envelope is in the server now
						if _, err := c.Write(pkg[len(pkg)-1:]); err != nil {
							errs <- err
							return
						}
						rs, err := readReplies(c, nReplies, 300*time.Second)
						if err != nil {
							errs <- fmt.Errorf("replies: %v", err)
							return
						}
						k := 0
						for _, r := range rs {
							if r.Status == proto.OK {
								k++
							} else if r.Status == proto.Permanent {
								errs <- fmt.Errorf("D reply %q", r.String())
								return
							}
						}
						mu.Lock()
						accepted += int64(k * (len(env.Recipients) / nReplies))
						mu.Unlock()
					}()
				}
				sent.Wait()
				close(release)
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(peakRSS(b, s.cmd.Process.Pid), "peak-RSS-MiB")
			b.ReportMetric(128, "target-MiB")
			b.ReportMetric(float64(accepted)/float64(b.N), "rcpts-K")
			if n := countFiles(b, filepath.Join(dir, "new")); int64(n) != accepted {
				b.Fatalf("%d files stored, %d recipients got K", n, accepted)
			}
		})
	}
}
