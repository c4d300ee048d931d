package testworker

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// EchoSocket opens a WebSocket to the /ws route of a worker behind
// httpURL (http://host:port), and checks one echo through it. The
// socket closes when the test ends.
func EchoSocket(ctx context.Context, t testing.TB, httpURL string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(httpURL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "echo:hi" {
		t.Fatalf("read %q, %v", got, err)
	}
	return c
}
