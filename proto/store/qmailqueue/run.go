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
	"syscall"
	"time"

	"qbox/proto"
)

// DefaultProgramTimeout bounds how long a program may stall: each write of
// the message into its fd 0 while the client sends it, and then the whole
// hand-off (the rest of the message, the envelope, the wait for its exit)
// once the client's package is complete. qmail has no such bound; a
// wedged program must not hold a session (and its client) forever.
const DefaultProgramTimeout = 10 * time.Minute

// pipeGrace is how long the program's stderr and fd 6 are read after it
// exited: what it wrote before exiting is already in the pipe, and a
// child it left running that still holds them open must not hold the
// session. Only a failure waits for them (a K needs neither).
const pipeGrace = time.Second

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
	// Timeout bounds each stalled write to the program while the message
	// arrives, and then the whole hand-off after the client's final byte
	// (rest of the message, envelope, exit); 0 means
	// DefaultProgramTimeout. The exit status decides: a child the program
	// left running, even one holding its stdout or stderr, changes
	// nothing.
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
		closeAll(msgR, msgW)
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	// fd 6 carries a custom reply for exit 82 (notqmail); 3-5 are closed.
	customR, customW, err := os.Pipe()
	if err != nil {
		closeAll(msgR, msgW, envR, envW)
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	// stderr is a pipe of our own, not an io.Writer: exec.Cmd.Wait would
	// wait for a copying goroutine until every holder of the pipe closed
	// it, and a child the program left running holds it for ever.
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(msgR, msgW, envR, envW, customR, customW)
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdin = msgR // *os.File: the child gets the pipe itself as fd 0
	cmd.Stdout = envR
	cmd.Stderr = errW
	cmd.ExtraFiles = []*os.File{nil, nil, nil, customW}
	cmd.Env = append(os.Environ(), "PROTO=TCP", "TCPREMOTEIP="+peer.RemoteIP, "TCPREMOTEHOST="+peer.RemoteHost)
	cmd.Env = append(cmd.Env, p.Env...)
	// Its own process group, so a kill on abort reaches the whole
	// program (a shell script's children too) and a ^C on a foreground
	// serve does not hit the program before serve decides.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	closeAll(msgR, envR, customW, errW)
	if err != nil {
		closeAll(msgW, envW, customR, errR)
		return nil, fmt.Errorf("qmail-queue: %w", err)
	}
	d := &programDelivery{prog: p, peer: peer, cmd: cmd, msgW: msgW, envW: envW, start: time.Now()}
	d.custom = readPipe(customR, proto.MaxReplyText)
	d.stderr = readPipe(errR, maxStderr)
	d.msgOut = &deadlineWriter{f: msgW, timeout: p.timeout()}
	d.bw = bufio.NewWriterSize(d.msgOut, 64<<10)
	d.bw.Write(proto.AppendReceived(nil, peer, p.hostname(peer), p.now()))
	return d, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

type programDelivery struct {
	prog   *Program
	peer   proto.Peer
	cmd    *exec.Cmd
	msgW   *os.File
	envW   *os.File
	bw     *bufio.Writer
	msgOut *deadlineWriter // under bw
	stderr *pipeText
	custom *pipeText
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
	d.custom.stop()
	d.stderr.stop()
}

func (d *programDelivery) kill() {
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
}

// Commit closes the program's fd 0, writes the envelope to its fd 1 and
// maps its exit code to one reply for every recipient.
func (d *programDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	if d.done {
		return proto.Repeat(len(env.Recipients), proto.Z("internal error: delivery already finished (#4.3.0)"))
	}
	if len(env.Recipients) == 0 {
		// Nothing to hand off: the server refuses such a package, and
		// the program must not queue a message for nobody.
		d.Abort()
		return nil
	}
	// NUL ends an item of the envelope on fd 1: an address holding one
	// would hand the program a different sender or recipient. The servers
	// refuse CR, LF, NUL and the empty recipient where they enter; this is
	// the second line of defence. A bad sender refuses every recipient, a
	// bad recipient only itself.
	if err := proto.CheckSender(env.Sender); err != nil {
		d.prog.logger().Warn("qmail-queue envelope refused", "program", d.prog.Path, "remote", d.peer.RemoteIP, "err", err.Error())
		d.Abort()
		return proto.Repeat(len(env.Recipients), ReplyBadAddress)
	}
	replies := make([]proto.Reply, len(env.Recipients))
	good := make([]string, 0, len(env.Recipients))
	for i, r := range env.Recipients {
		if err := proto.CheckRecipient(r); err != nil {
			d.prog.logger().Warn("qmail-queue recipient refused", "program", d.prog.Path, "remote", d.peer.RemoteIP, "err", err.Error())
			replies[i] = ReplyBadAddress
			continue
		}
		good = append(good, r)
	}
	if len(good) == 0 {
		d.Abort()
		return replies
	}
	reply := d.handOff(ctx, proto.Envelope{Sender: env.Sender, Recipients: good})
	for i := range replies {
		if replies[i].Status == 0 {
			replies[i] = reply
		}
	}
	return replies
}

// ReplyBadAddress answers an address that cannot be handed to the program
// unchanged.
var ReplyBadAddress = proto.D("sorry, I can't accept addresses like that (#5.1.3)")

// handOff closes the program's fd 0, writes the envelope to its fd 1 and
// maps its exit code to the one reply every recipient gets.
func (d *programDelivery) handOff(ctx context.Context, env proto.Envelope) proto.Reply {
	d.done = true
	// One deadline for the whole hand-off, not one per step.
	deadline := time.Now().Add(d.prog.timeout())
	if d.werr == nil {
		d.msgOut.until = deadline
		d.werr = d.bw.Flush()
	}
	if d.werr != nil {
		// Part of the message never reached the program. With the
		// envelope it would queue that part and exit 0, and the client,
		// told Z, would send the whole message again: it gets no
		// envelope and is killed. A program that had already exited by
		// itself (a refusal before reading everything) is judged by its
		// code, as qmail-qmqpd would.
		d.kill()
		d.msgW.Close()
		d.envW.Close()
		d.cmd.Wait()
		code := d.cmd.ProcessState.ExitCode()
		d.prog.logger().Warn("qmail-queue program did not read the whole message",
			"program", d.prog.Path, "remote", d.peer.RemoteIP, "size", d.size, "exit", code, "err", d.werr.Error())
		switch {
		case code == ExitCustomReply:
			if reply, ok := CustomReply(d.custom.text(pipeGrace)); ok {
				return reply
			}
			return ExitReply(code)
		case code > 0:
			return ExitReply(code)
		}
		return proto.Z("qq write error: the queue program did not read the whole message (#4.3.0)")
	}
	d.msgW.Close()

	// The envelope is written while waiting, so a program that never
	// reads fd 1 is still bounded by the deadline below.
	envErr := make(chan error, 1)
	go func() {
		d.envW.SetWriteDeadline(deadline)
		_, err := d.envW.Write(EncodeEnvelope(env))
		d.envW.Close()
		envErr <- err
	}()
	// Every file the child has is an *os.File: Wait returns when the
	// program exits, whatever its children still hold open.
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var waitErr error
	var why string
	select {
	case waitErr = <-exited:
	case <-timer.C:
		why = "timed out"
	case <-ctx.Done():
		why = "cancelled: " + ctx.Err().Error()
	}
	if why != "" {
		// select picks at random among ready cases: a program that has
		// already exited is judged by its exit status, not killed (its
		// 0 means queued, and a Z would have the message sent twice).
		select {
		case waitErr = <-exited:
			why = ""
		default:
			d.kill()
			waitErr = <-exited
		}
	}
	// A write still pending now was never read by the program (a child
	// may hold fd 1 open): it ends at once and the message is not K.
	d.envW.SetWriteDeadline(time.Now())
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
		if reply, ok = CustomReply(d.custom.text(pipeGrace)); !ok {
			reply = ExitReply(code)
		}
	default:
		reply = ExitReply(code)
	}
	if reply.Status != proto.OK {
		attrs := []any{"program", d.prog.Path, "remote", d.peer.RemoteIP,
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
		if s := d.stderr.text(pipeGrace); len(s) > 0 {
			attrs = append(attrs, "stderr", proto.Printable(string(s), maxStderr))
		}
		d.prog.logger().Warn("qmail-queue program failed", attrs...)
	}
	d.custom.stop()
	d.stderr.stop()
	return reply
}

// pipeText collects the first max bytes the program writes on a pipe
// (fd 6, stderr), reading on to the end so the program never blocks on
// it.
type pipeText struct {
	f    *os.File
	done chan struct{}
	max  int
	b    []byte
}

func readPipe(f *os.File, max int) *pipeText {
	p := &pipeText{f: f, done: make(chan struct{}), max: max}
	go func() {
		defer close(p.done)
		buf := make([]byte, 512)
		for {
			n, err := f.Read(buf)
			if room := p.max - len(p.b); room > 0 {
				p.b = append(p.b, buf[:min(n, room)]...)
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// text returns what the program wrote, once the pipe is closed by every
// process holding it, or at most grace from now: the program has exited,
// so what it wrote is already in the pipe, and a child it left running
// must not hold the caller.
func (p *pipeText) text(grace time.Duration) []byte {
	p.f.SetReadDeadline(time.Now().Add(grace))
	<-p.done
	return p.b
}

// stop ends the reading at once and closes the pipe.
func (p *pipeText) stop() {
	p.f.SetReadDeadline(time.Unix(1, 0))
	<-p.done
	p.f.Close()
}

// deadlineWriter writes to a pipe with a fresh deadline per write, so a
// program that stops reading cannot block a session forever; once until
// is set, every write shares that one deadline instead.
type deadlineWriter struct {
	f       *os.File
	timeout time.Duration
	until   time.Time
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	if w.until.IsZero() {
		w.f.SetWriteDeadline(time.Now().Add(w.timeout))
	} else {
		w.f.SetWriteDeadline(w.until)
	}
	return w.f.Write(b)
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

var _ proto.Backend = (*Program)(nil)
