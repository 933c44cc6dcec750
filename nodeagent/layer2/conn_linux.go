//go:build linux

package layer2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// writeTimeout bounds a send: replies are sent while holding the answers
// read lock, and a stuck socket must not block SetAnswers forever.
const writeTimeout = time.Second

// etherTypeARP is the EtherType the ARP socket is bound to.
const etherTypeARP = 0x0806

// packetARPConn is the real arpConn: an AF_PACKET datagram socket bound to
// the interface and to the ARP EtherType.
//
// A datagram (not raw) socket lets the kernel write the Ethernet header with
// the interface's own MAC as source even when the ARP payload names another
// node's MAC (externalTrafficPolicy Local). Sending frames with a foreign
// source MAC would make switches learn that node's MAC on this port and
// misdeliver its traffic.
type packetARPConn struct {
	ifi *net.Interface
	c   *packet.Conn
	buf []byte
}

func openARP(ifi *net.Interface) (arpConn, error) {
	c, err := packet.Listen(ifi, packet.Datagram, etherTypeARP, nil)
	if err != nil {
		return nil, fmt.Errorf("layer2: ARP socket on interface %q: %w", ifi.Name, err)
	}
	return &packetARPConn{ifi: ifi, c: c, buf: make([]byte, max(ifi.MTU, 128))}, nil
}

// ReadFrom skips payloads that are not ARP for IPv4 over Ethernet.
func (c *packetARPConn) ReadFrom() (*arp.Packet, error) {
	for {
		n, _, err := c.c.ReadFrom(c.buf)
		if err != nil {
			return nil, err
		}
		p := new(arp.Packet)
		if err := p.UnmarshalBinary(c.buf[:n]); err != nil {
			continue
		}
		if p.HardwareAddrLength != 6 || p.IPLength != 4 {
			continue
		}
		return p, nil
	}
}

func (c *packetARPConn) WriteTo(p *arp.Packet, dst net.HardwareAddr) error {
	b, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	if err := c.c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err = c.c.WriteTo(b, &packet.Addr{HardwareAddr: dst})
	return err
}

func (c *packetARPConn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

func (c *packetARPConn) Close() error { return c.c.Close() }

// icmpNDPConn is the real ndpConn: a raw ICMPv6 socket bound to the
// interface, using mdlayher/ndp for the messages.
//
// It is bound to "::" rather than to one of the interface's addresses (as
// ndp.Listen does) and has IPV6_FREEBIND set, so that a Neighbor
// Advertisement can be sent from the target address itself without the
// node owning it and without changing the node's net.ipv6.ip_nonlocal_bind
// sysctl: some clients (ndisc6) ignore an NA from any other source.
type icmpNDPConn struct {
	ifi *net.Interface
	pc  *ipv6.PacketConn
	buf []byte
}

func openNDP(ifi *net.Interface) (ndpConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return setNDPSocketOptions(rc, ifi.Name)
	}}
	c, err := lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("layer2: ICMPv6 socket on interface %q: %w", ifi.Name, err)
	}
	pc := ipv6.NewPacketConn(c)
	if err := configureNDP(pc); err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("layer2: ICMPv6 socket on interface %q: %w", ifi.Name, err)
	}
	return &icmpNDPConn{ifi: ifi, pc: pc, buf: make([]byte, max(ifi.MTU, 1280))}, nil
}

// setNDPSocketOptions binds the socket to the interface (so it only sees
// solicitations received there) and allows a non-local source address.
func setNDPSocketOptions(rc syscall.RawConn, ifname string) error {
	var sockErr error
	err := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
			sockErr = fmt.Errorf("SO_BINDTODEVICE: %w", err)
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1); err != nil {
			sockErr = fmt.Errorf("IPV6_FREEBIND: %w", err)
		}
	})
	return errors.Join(err, sockErr)
}

// configureNDP applies RFC 4861's hop limit of 255 (receivers drop anything
// else, as proof the message was not routed) and lets only neighbor
// solicitations reach the process.
func configureNDP(pc *ipv6.PacketConn) error {
	if err := pc.SetHopLimit(ndp.HopLimit); err != nil {
		return err
	}
	if err := pc.SetMulticastHopLimit(ndp.HopLimit); err != nil {
		return err
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	if err := pc.SetICMPFilter(&f); err != nil {
		return err
	}
	return pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true)
}

// ReadFrom skips messages that were routed (hop limit below 255), arrived
// on another interface, or do not parse.
func (c *icmpNDPConn) ReadFrom() (ndp.Message, netip.Addr, error) {
	for {
		n, cm, src, err := c.pc.ReadFrom(c.buf)
		if err != nil {
			return nil, netip.Addr{}, err
		}
		if cm == nil || cm.HopLimit != ndp.HopLimit || cm.IfIndex != c.ifi.Index {
			continue
		}
		ipa, ok := src.(*net.IPAddr)
		if !ok {
			continue
		}
		from, ok := netip.AddrFromSlice(ipa.IP)
		if !ok {
			continue
		}
		m, err := ndp.ParseMessage(c.buf[:n])
		if err != nil {
			continue
		}
		return m, from, nil
	}
}

func (c *icmpNDPConn) WriteTo(m ndp.Message, src, dst netip.Addr) error {
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		return err
	}
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: src.AsSlice(), IfIndex: c.ifi.Index}
	if err := c.pc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err = c.pc.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice(), Zone: c.ifi.Name})
	return err
}

func (c *icmpNDPConn) JoinGroup(group netip.Addr) error {
	return c.pc.JoinGroup(c.ifi, &net.IPAddr{IP: group.AsSlice()})
}

func (c *icmpNDPConn) LeaveGroup(group netip.Addr) error {
	return c.pc.LeaveGroup(c.ifi, &net.IPAddr{IP: group.AsSlice()})
}

func (c *icmpNDPConn) SetReadDeadline(t time.Time) error { return c.pc.SetReadDeadline(t) }

func (c *icmpNDPConn) Close() error { return c.pc.Close() }

// ipv6Unsupported reports an error opening the ICMPv6 socket because the
// kernel has IPv6 disabled; the responder then serves IPv4 only.
func ipv6Unsupported(err error) bool {
	return errors.Is(err, unix.EAFNOSUPPORT)
}

// transientReadError reports read errors after which the socket keeps
// working: a packet socket reports ENETDOWN once when its interface goes
// down and receives again when it comes back up.
func transientReadError(err error) bool {
	return errors.Is(err, unix.ENETDOWN)
}
