package main

import (
	"net"
	"strings"
)

// notifier sends sd_notify(3) messages to systemd when weir runs as a
// Type=notify service: READY=1 once forwarding, STATUS= lines, STOPPING=1.
// It needs no library: the protocol is one datagram per message on the
// unix socket named by $NOTIFY_SOCKET. A nil notifier sends nothing.
type notifier struct {
	addr *net.UnixAddr
}

func newNotifier(socket string) *notifier {
	if socket == "" {
		return nil
	}
	if strings.HasPrefix(socket, "@") { // abstract namespace
		socket = "\x00" + socket[1:]
	}
	return &notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}
}

// send delivers msg, newline-separated KEY=VALUE pairs. Failures are
// ignored: systemd not listening must not stop the appliance.
func (n *notifier) send(msg string) {
	if n == nil {
		return
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(msg))
}
