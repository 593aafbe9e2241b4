// Command qmqpfloor is the floor for one message per Go process
// (BenchmarkInjectOneMessage builds it): qmail-qmqpc's job and nothing
// more, with the standard library only. The message on fd 0, the
// envelope on fd 1 (F sender, T recipients, each ended by NUL, then NUL),
// one QMQP exchange with the first server in $QMQPSERVERS; exit 0 on K.
package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

func netstring(b []byte) []byte {
	return append(append(strconv.AppendInt(nil, int64(len(b)), 10), ':'), append(b, ',')...)
}

func main() {
	msg, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Exit(54)
	}
	env, err := io.ReadAll(os.NewFile(1, "envelope"))
	if err != nil {
		os.Exit(54)
	}
	fields := bytes.Split(bytes.TrimSuffix(env, []byte{0, 0}), []byte{0})
	if len(fields) < 2 || fields[0][0] != 'F' {
		os.Exit(91)
	}
	body := netstring(msg)
	for _, f := range fields {
		body = append(body, netstring(f[1:])...)
	}
	c, err := net.Dial("tcp", strings.Fields(os.Getenv("QMQPSERVERS"))[0])
	if err != nil {
		os.Exit(81)
	}
	if _, err := c.Write(netstring(body)); err != nil {
		os.Exit(81)
	}
	reply, err := bufio.NewReader(c).ReadString(',')
	if err != nil || !strings.Contains(reply, ":K") {
		os.Exit(81)
	}
}
