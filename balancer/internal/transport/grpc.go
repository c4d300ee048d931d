package transport

import "strings"

// A gRPC answer's body is a sequence of length-prefixed messages (one
// byte of flags, four of length, then the message; gRPC's
// doc/PROTOCOL-HTTP2.md). A unary call answers with one message, so an
// answer whose second message begins is a streaming call's (server
// streaming or bidirectional): the transport marks it a stream then,
// as it does an event stream at its head, and the slot it held goes
// back while it stays open.

// isGRPCAnswer reports whether a response's content type is gRPC's.
func isGRPCAnswer(contentType string) bool {
	if !strings.HasPrefix(contentType, "application/grpc") {
		return false
	}
	rest := contentType[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// grpcMessages counts the messages of a gRPC answer as its bytes pass,
// in whatever pieces they come. The zero value is at the start of a
// body.
type grpcMessages struct {
	n      int    // messages begun
	prefix int    // bytes of the current message's prefix seen, 0 to 4
	length uint32 // its length, as far as the prefix has been seen
	left   uint32 // bytes of the current message still to come
}

// feed takes the next bytes of the body and returns how many messages
// have begun so far.
func (m *grpcMessages) feed(b []byte) int {
	for len(b) > 0 {
		if m.left > 0 {
			k := uint32(len(b))
			if k > m.left {
				k = m.left
			}
			m.left -= k
			b = b[k:]
			continue
		}
		if m.prefix == 0 {
			m.n++ // the flags byte of a new message
		} else {
			m.length = m.length<<8 | uint32(b[0])
		}
		b = b[1:]
		if m.prefix++; m.prefix == 5 {
			m.left, m.prefix, m.length = m.length, 0, 0
		}
	}
	return m.n
}
