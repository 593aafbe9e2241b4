package qmailqueue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"qbox/proto"
)

// DefaultProgramTimeout bounds how long a program may stall: each write of
// the message into its fd 0, and the wait for its exit once the envelope
// is written. qmail has no such bound; a wedged program must not hold a
// session (and its client) forever.
const DefaultProgramTimeout = 10 * time.Minute

// Program is a proto.Backend that hands every message to a qmail-queue
// compatible program, as qmail-qmqpd and qmail-qmtpd do: the program is
// started when a message begins, reads the message (with a Received line
// on top) from fd 0 as it arrives, then the envelope (F sender, T
// recipients, each NUL-terminated, an empty item last) from fd 1, and its
// exit code decides K, Z or D for every recipient.
//
// With /var/qmail/bin/qmail-queue this is qmail-qmqpd/qmail-qmtpd; with
// qbox's qmail-qmqpc personality it is a QMQP relay to a cluster.
type Program struct {
	Path string
	Args []string
	// Env is added to the program's environment, after TCPREMOTEIP,
	// TCPREMOTEHOST and PROTO describing the client.
	Env []string
	// Hostname names this server in the Received line; empty means the
	// peer's LocalHost, then os.Hostname.
	Hostname string
	// Timeout bounds each stalled write to the program and the wait for
	// its exit; 0 means DefaultProgramTimeout.
	Timeout time.Duration
	// Logger receives why a message failed (exit code, program stderr);
	// nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for the Received line; nil means time.Now.
	Now func() time.Time
}

// maxStderr bounds how much of the program's stderr is kept for the log.
const maxStderr = 2000

// Begin starts the program for one message and writes the Received line
// into its fd 0.
func (p *Program) Begin(ctx context.Context, peer proto.Peer, size int64) (proto.Delivery, error) {
	msgR, msgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	envR, envW, err := os.Pipe()
	if err != nil {
		msgR.Close()
		msgW.Close()
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdin = msgR // *os.File: the child gets the pipe itself as fd 0
	cmd.Stdout = envR
	// fd 6 carries a custom reply for exit 82 (notqmail); 3-5 are closed.
	customR, customW, err := os.Pipe()
	if err != nil {
		msgR.Close()
		msgW.Close()
		envR.Close()
		envW.Close()
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	cmd.ExtraFiles = []*os.File{nil, nil, nil, customW}
	stderr := &boundedBuffer{max: maxStderr}
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), "PROTO=TCP", "TCPREMOTEIP="+peer.RemoteIP, "TCPREMOTEHOST="+peer.RemoteHost)
	cmd.Env = append(cmd.Env, p.Env...)
	// Its own process group, so a kill on abort reaches the whole
	// program (a shell script's children too) and a ^C on a foreground
	// serve does not hit the program before serve decides.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	msgR.Close()
	envR.Close()
	customW.Close()
	if err != nil {
		msgW.Close()
		envW.Close()
		customR.Close()
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	d := &programDelivery{prog: p, peer: peer, cmd: cmd, msgW: msgW, envW: envW, stderr: stderr, start: time.Now()}
	d.custom = readCustom(customR)
	d.bw = bufio.NewWriterSize(deadlineWriter{f: msgW, timeout: p.timeout()}, 64<<10)
	d.bw.Write(proto.AppendReceived(nil, peer, p.hostname(peer), p.now()))
	return d, nil
}

type programDelivery struct {
	prog   *Program
	peer   proto.Peer
	cmd    *exec.Cmd
	msgW   *os.File
	envW   *os.File
	bw     *bufio.Writer
	stderr *boundedBuffer
	custom *customReader
	start  time.Time
	size   int64
	werr   error // first error writing the message: the program did not get all of it
	done   bool
}

// Write passes message bytes to the program's fd 0. A write error (the
// program exited early, or stalled past Timeout) is remembered and the
// rest discarded, so the server still reads the whole package and Commit
// answers with the program's verdict, or Z.
func (d *programDelivery) Write(b []byte) (int, error) {
	if d.done {
		return 0, errors.New("qmail-queue: write after commit or abort")
	}
	d.size += int64(len(b))
	if d.werr == nil {
		if _, err := d.bw.Write(b); err != nil {
			d.werr = err
		}
	}
	return len(b), nil
}

// Abort kills the program before it has an envelope, so nothing of the
// message is queued.
func (d *programDelivery) Abort() {
	if d.done {
		return
	}
	d.done = true
	d.kill()
	d.msgW.Close()
	d.envW.Close()
	d.cmd.Wait()
}

func (d *programDelivery) kill() {
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
}

// Commit closes the program's fd 0, writes the envelope to its fd 1 and
// maps its exit code to one reply for every recipient.
func (d *programDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	if d.done {
		return repeatReply(len(env.Recipients), proto.Z("internal error: delivery already finished (#4.3.0)"))
	}
	if len(env.Recipients) == 0 {
		// Nothing to hand off: the server refuses such a package, and
		// the program must not queue a message for nobody.
		d.Abort()
		return nil
	}
	d.done = true
	if d.werr == nil {
		d.werr = d.bw.Flush()
	}
	d.msgW.Close()

	// The envelope is written while waiting, so a program that never
	// reads fd 1 is still bounded by the timeout below.
	envErr := make(chan error, 1)
	go func() {
		_, err := deadlineWriter{f: d.envW, timeout: d.prog.timeout()}.Write(EncodeEnvelope(env))
		d.envW.Close()
		envErr <- err
	}()
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()

	timer := time.NewTimer(d.prog.timeout())
	defer timer.Stop()
	var waitErr error
	var why string
	select {
	case waitErr = <-exited:
	case <-timer.C:
		why = "timed out"
		d.kill()
		waitErr = <-exited
	case <-ctx.Done():
		why = "cancelled: " + ctx.Err().Error()
		d.kill()
		waitErr = <-exited
	}
	werr := <-envErr
	if d.werr == nil {
		d.werr = werr
	}

	var reply proto.Reply
	code := d.cmd.ProcessState.ExitCode()
	switch {
	case why != "":
		reply = proto.Z("qq timeout (#4.3.0)")
	case code < 0: // killed by a signal
		reply = proto.Z("qq crashed (#4.3.0)")
	case code == 0 && d.werr != nil:
		// It says it queued the message but did not read all of it.
		reply = proto.Z("qq read error (#4.3.0)")
	case code == 0:
		reply = proto.K("ok " + strconv.FormatInt(time.Now().Unix(), 10) + " qp " + strconv.Itoa(d.cmd.Process.Pid))
	case code == ExitCustomReply:
		var ok bool
		if reply, ok = CustomReply(d.custom.bytes()); !ok {
			reply = ExitReply(code)
		}
	default:
		reply = ExitReply(code)
	}
	if reply.Status != proto.OK {
		attrs := []any{"program", d.prog.Path, "remote_ip", d.peer.RemoteIP,
			"sender", proto.Printable(env.Sender, 1000), "recipients", len(env.Recipients), "size", d.size,
			"exit", code, "reply", reply.String()}
		if why != "" {
			attrs = append(attrs, "why", why)
		} else if waitErr != nil && code < 0 {
			attrs = append(attrs, "why", waitErr.Error())
		}
		if d.werr != nil {
			attrs = append(attrs, "write_err", d.werr.Error())
		}
		if s := d.stderr.String(); s != "" {
			attrs = append(attrs, "stderr", proto.Printable(s, maxStderr))
		}
		d.prog.logger().Warn("qmail-queue program failed", attrs...)
	}
	return repeatReply(len(env.Recipients), reply)
}

// customReader collects what the program writes on fd 6, up to
// proto.MaxReplyText bytes, until the program closes it (at exit).
type customReader struct {
	done chan struct{}
	b    []byte
}

func readCustom(f *os.File) *customReader {
	c := &customReader{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer f.Close()
		buf := make([]byte, 512)
		for {
			n, err := f.Read(buf)
			if room := proto.MaxReplyText - len(c.b); room > 0 {
				c.b = append(c.b, buf[:min(n, room)]...)
			}
			if err != nil {
				return
			}
		}
	}()
	return c
}

// bytes waits until fd 6 is closed by every process holding it. A
// program that leaves a child running with fd 6 open would stall this, so
// the wait is bounded.
func (c *customReader) bytes() []byte {
	select {
	case <-c.done:
		return c.b
	case <-time.After(5 * time.Second):
		return nil
	}
}

// deadlineWriter writes to a pipe with a fresh deadline per write, so a
// program that stops reading cannot block a session forever.
type deadlineWriter struct {
	f       *os.File
	timeout time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	w.f.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.f.Write(b)
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.b); room > 0 {
		b.b = append(b.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

func (p *Program) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultProgramTimeout
}

func (p *Program) hostname(peer proto.Peer) string {
	return proto.LocalName(p.Hostname, peer)
}

func (p *Program) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Program) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

func repeatReply(n int, r proto.Reply) []proto.Reply {
	out := make([]proto.Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

var _ proto.Backend = (*Program)(nil)
