// Command nettool is a static helper the network e2e tests put into a
// box's root filesystem, for what busybox cannot do (UDP).
//
//	nettool udp-echo PORT          echo datagrams back on PORT, forever
//	nettool udp-send HOST:PORT MSG send MSG, print the reply (exit 1 if none in 3 s)
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: nettool udp-echo PORT | udp-send HOST:PORT MSG")
	}
	switch os.Args[1] {
	case "udp-echo":
		pc, err := net.ListenPacket("udp", ":"+os.Args[2])
		if err != nil {
			fail(err.Error())
		}
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				fail(err.Error())
			}
			pc.WriteTo(buf[:n], from)
		}
	case "udp-send":
		if len(os.Args) != 4 {
			fail("usage: nettool udp-send HOST:PORT MSG")
		}
		c, err := net.Dial("udp", os.Args[2])
		if err != nil {
			fail(err.Error())
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte(os.Args[3])); err != nil {
			fail(err.Error())
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			fail(err.Error())
		}
		fmt.Printf("%s\n", buf[:n])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "nettool:", msg)
	os.Exit(1)
}
