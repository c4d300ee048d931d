package tracing

import (
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv137 "go.opentelemetry.io/otel/semconv/v1.37.0"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
)

// The RPC attributes of a gRPC call's spans. By default they are the
// RPC semantic conventions up to v1.37, which gRPC instrumentations
// emit today (rpc.system, rpc.service, rpc.method, rpc.grpc.status_code
// as an int), so that the pool's spans line up with its workers' and
// clients'. OTEL_SEMCONV_STABILITY_OPT_IN=rpc gives the stable ones
// instead (rpc.system.name, rpc.method as the full method,
// rpc.response.status_code as a name), rpc/dup both, as the migration
// guide of the conventions says; with both, rpc.method is the stable
// full method.
type rpcConventions uint8

const (
	rpcOld rpcConventions = 1 << iota
	rpcStable
)

// rpcConventionsFromEnv reads OTEL_SEMCONV_STABILITY_OPT_IN.
func rpcConventionsFromEnv() rpcConventions {
	c := rpcOld
	for _, v := range strings.Split(os.Getenv("OTEL_SEMCONV_STABILITY_OPT_IN"), ",") {
		switch strings.TrimSpace(v) {
		case "rpc/dup":
			return rpcOld | rpcStable
		case "rpc":
			c = rpcStable
		}
	}
	return c
}

// splitMethod splits a gRPC call's path, /package.Service/Method.
func splitMethod(path string) (service, method string, ok bool) {
	service, method, ok = strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return service, method, ok && service != "" && method != "" && !strings.Contains(method, "/")
}

// rpcStart appends the attributes a gRPC call's span has from its start.
func (c rpcConventions) rpcStart(attrs []attribute.KeyValue, r *http.Request) []attribute.KeyValue {
	service, method, ok := splitMethod(r.URL.Path)
	if c&rpcOld != 0 {
		attrs = append(attrs, semconv137.RPCSystemGRPC)
		if ok {
			attrs = append(attrs, semconv137.RPCService(service))
			if c&rpcStable == 0 {
				attrs = append(attrs, semconv137.RPCMethod(method))
			}
		}
	}
	if c&rpcStable != 0 {
		attrs = append(attrs, semconv.RPCSystemNameGRPC)
		if ok {
			attrs = append(attrs, semconv.RPCMethod(service+"/"+method))
		} else {
			attrs = append(attrs, semconv.RPCMethod("_OTHER"), semconv.RPCMethodOriginal(r.URL.Path))
		}
	}
	return attrs
}

// rpcEnd appends the attributes of the call's status.
func (c rpcConventions) rpcEnd(attrs []attribute.KeyValue, code int) []attribute.KeyValue {
	if c&rpcOld != 0 {
		attrs = append(attrs, semconv137.RPCGRPCStatusCodeKey.Int(code))
	}
	if c&rpcStable != 0 {
		attrs = append(attrs, semconv.RPCResponseStatusCode(grpcstatus.Name(code)))
	}
	return attrs
}

// callStatus is the gRPC status of the call whose answer's headers and
// trailers are in h, and whose HTTP status is status: the grpc-status it
// carries, else what a gRPC client makes of the HTTP status.
func callStatus(h http.Header, status int) int {
	if code, ok := grpcstatus.FromHeader(h); ok {
		return code
	}
	return grpcstatus.FromHTTP(status)
}

// serverFault reports whether a server span with this gRPC status failed:
// the codes that say the server did (the conventions' list), not the
// ones an application answers a client's request with.
func serverFault(code int) bool {
	switch code {
	case grpcstatus.Unknown, grpcstatus.DeadlineExceeded, grpcstatus.Unimplemented,
		grpcstatus.Internal, grpcstatus.Unavailable, grpcstatus.DataLoss:
		return true
	}
	return false
}

// endGRPCServer sets a gRPC call's server span's status, name and
// attributes once its answer is complete. A method that nobody serves
// does not name the span: the client chose it.
func (t *Tracer) endGRPCServer(span trace.Span, r *http.Request, h http.Header, status int) {
	code := callStatus(h, status)
	if serverFault(code) {
		span.SetStatus(codes.Error, grpcstatus.Name(code))
	}
	if service, method, ok := splitMethod(r.URL.Path); ok && code != grpcstatus.Unimplemented {
		span.SetName(service + "/" + method)
	}
	span.SetAttributes(t.rpc.rpcEnd(make([]attribute.KeyValue, 0, 2), code)...)
}

// endGRPCAttempt sets an attempt's span's gRPC status: what the worker
// answered, UNAVAILABLE when it did not answer. A client span fails with
// any status but OK.
func endGRPCAttempt(span trace.Span, c rpcConventions, h http.Header, status int, err error) {
	code := callStatus(h, status)
	if _, answered := grpcstatus.FromHeader(h); !answered && err != nil {
		code = grpcstatus.Unavailable
	}
	if code != grpcstatus.OK && err == nil && status < 500 {
		span.SetStatus(codes.Error, grpcstatus.Name(code))
	}
	span.SetAttributes(c.rpcEnd(make([]attribute.KeyValue, 0, 2), code)...)
}
