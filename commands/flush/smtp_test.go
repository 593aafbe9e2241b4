package flush

import (
	"strings"
)

const testHelo = "qbox-test-client.example"

func portOf(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }
