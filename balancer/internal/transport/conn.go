package transport

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// Sizes of a forwarder connection's buffers. The read buffer holds a
// typical response head whole and is the unit a body is copied in.
const (
	connReadBuf  = 16 << 10
	connWriteBuf = 8 << 10
)

// aLongTimeAgo is a deadline in the past: setting it unblocks a read or
// write in progress at once.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one keep-alive connection to a worker, used by one exchange
// at a time. It is the bufio.Reader's source, so that it sees every read
// that would block on the worker: a streamed response is flushed to the
// client just before.
type conn struct {
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer

	reused    bool      // it served an exchange before this one
	idleSince time.Time // when it went back to the pool

	// State of the exchange in progress.
	read    int64               // bytes read from the worker
	written int64               // bytes written to the worker
	w       http.ResponseWriter // a stream's writer, flushed before a read blocks
	pending bool                // w has data not flushed yet
	abort   func()              // c.nc's deadline into the past, bound once
	head    headScratch
}

func newConn(nc net.Conn) *conn {
	c := &conn{nc: nc}
	c.br = bufio.NewReaderSize(c, connReadBuf)
	c.bw = bufio.NewWriterSize(c, connWriteBuf)
	c.abort = func() { _ = nc.SetDeadline(aLongTimeAgo) }
	return c
}

func (c *conn) Read(p []byte) (int, error) {
	if c.pending {
		c.pending = false
		_ = http.NewResponseController(c.w).Flush()
	}
	n, err := c.nc.Read(p)
	c.read += int64(n)
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	c.written += int64(n)
	return n, err
}

// begin resets the exchange state.
func (c *conn) begin() {
	c.read, c.written = 0, 0
	c.w, c.pending = nil, false
}

func (c *conn) close() { _ = c.nc.Close() }

// connPool holds one worker's idle connections, newest last. An idle
// connection is closed after idleTimeout by a timer the pool arms only
// while it holds some, so no goroutine waits per connection.
type connPool struct {
	network, address string
	dialer           net.Dialer
	idleTimeout      time.Duration
	maxIdle          int

	mu    sync.Mutex
	idle  []*conn
	timer *time.Timer
	armed bool
}

// get returns the newest idle connection that has not outlived the idle
// timeout, or dials a new one.
func (p *connPool) get(ctx context.Context) (*conn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if time.Since(c.idleSince) < p.idleTimeout {
			p.mu.Unlock()
			return c, nil
		}
		// The newest one expired, so did all the older ones.
		stale := p.idle
		p.idle = nil
		p.mu.Unlock()
		c.close()
		closeAll(stale)
	} else {
		p.mu.Unlock()
	}
	return p.dial(ctx)
}

// dial opens a new connection.
func (p *connPool) dial(ctx context.Context) (*conn, error) {
	nc, err := p.dialer.DialContext(ctx, p.network, p.address)
	if err != nil {
		return nil, err
	}
	return newConn(nc), nil
}

// put gives back a connection whose last exchange ended cleanly.
func (p *connPool) put(c *conn) {
	c.reused = true
	c.idleSince = time.Now()
	p.mu.Lock()
	if len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	if !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.idleTimeout, p.sweep)
		} else {
			p.timer.Reset(p.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// sweep closes the connections idle for longer than the timeout and
// arms the timer for the oldest of the others.
func (p *connPool) sweep() {
	now := time.Now()
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleSince) >= p.idleTimeout {
		i++
	}
	expired := make([]*conn, i)
	copy(expired, p.idle[:i])
	n := copy(p.idle, p.idle[i:])
	clear(p.idle[n:])
	p.idle = p.idle[:n]
	if n > 0 {
		p.timer.Reset(p.idleTimeout - now.Sub(p.idle[0].idleSince))
	} else {
		p.armed = false
	}
	p.mu.Unlock()
	closeAll(expired)
}

// closeIdle closes every idle connection. Connections in use go back to
// the pool when their exchange ends, as before.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	p.armed = false
	p.mu.Unlock()
	closeAll(idle)
}

func (p *connPool) idleLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func closeAll(cs []*conn) {
	for _, c := range cs {
		c.close()
	}
}
