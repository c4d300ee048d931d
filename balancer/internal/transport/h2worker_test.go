package transport

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawGRPCWorker is an h2c server written on http2.Framer that answers
// every stream, once its request has ended, with a unary gRPC answer in
// one write: headers, the message reply, and trailers with grpc-status
// 0. It keeps no state of the streams and ignores what the client sends
// but SETTINGS, PING and flow control, so that a benchmark measures the
// front and not the worker, as replyWorker does for HTTP/1.1. It is no
// conforming HTTP/2 server: a fake, because a worker cheap enough to
// leave the front's cost visible cannot be a real one.
func rawGRPCWorker(tb testing.TB, reply []byte) string {
	return serveConns(tb, func(c net.Conn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
			return
		}
		var out bytes.Buffer
		bw := bufio.NewWriter(c)
		fr := http2.NewFramer(&out, bufio.NewReader(c))
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		block := func(fields ...string) []byte {
			hb.Reset()
			for i := 0; i < len(fields); i += 2 {
				_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			return hb.Bytes()
		}
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
		_ = fr.WriteWindowUpdate(0, 1<<30-65535)
		received := uint32(0)
		for {
			if out.Len() > 0 {
				_, _ = bw.Write(out.Bytes())
				out.Reset()
				if err := bw.Flush(); err != nil {
					return
				}
			}
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			end := false
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = fr.WritePing(true, f.Data)
				}
			case *http2.HeadersFrame:
				end = f.StreamEnded()
			case *http2.DataFrame:
				end = f.StreamEnded()
				if received += f.Length; received > 1<<29 {
					_ = fr.WriteWindowUpdate(0, received)
					received = 0
				}
			case *http2.GoAwayFrame:
				return
			}
			if !end {
				continue
			}
			id := f.Header().StreamID
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(":status", "200", "content-type", "application/grpc"), EndHeaders: true})
			_ = fr.WriteData(id, false, reply)
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block("grpc-status", "0", "grpc-message", ""), EndHeaders: true, EndStream: true})
		}
	})
}
