package rtc

import (
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
)

// lazyFactory makes interceptors that exist only once their connection
// receives a stream they act on. pion binds every interceptor of a
// connection when the connection is made, and the NACK generator and the
// receiver report interceptor then tick (every 100 ms and every second)
// for as long as it lives, with or without streams. Every participant has
// a publisher connection, most receive nothing on it (they only watch),
// and each tick wakes the node: in audio 10 x 40 that was over 500
// wake-ups a second for nothing. A lazy interceptor creates its inner one
// on the first stream wants accepts, binds it to the connection's RTCP
// writer then, and passes everything through until then.
type lazyFactory struct {
	inner interceptor.Factory
	wants func(*interceptor.StreamInfo) bool
}

func (f *lazyFactory) NewInterceptor(id string) (interceptor.Interceptor, error) {
	return &lazyInterceptor{factory: f.inner, wants: f.wants, id: id}, nil
}

type lazyInterceptor struct {
	factory interceptor.Factory
	wants   func(*interceptor.StreamInfo) bool
	id      string

	mu     sync.Mutex
	writer interceptor.RTCPWriter
	closed bool
	inner  atomic.Pointer[interceptor.Interceptor]
}

// get is the inner interceptor, made (and bound to the RTCP writer) on
// the first call with create; nil before that or after Close.
func (l *lazyInterceptor) get(create bool) (interceptor.Interceptor, error) {
	if p := l.inner.Load(); p != nil {
		return *p, nil
	}
	if !create {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.inner.Load(); p != nil {
		return *p, nil
	}
	if l.closed {
		return nil, nil
	}
	in, err := l.factory.NewInterceptor(l.id)
	if err != nil {
		return nil, err
	}
	if l.writer != nil {
		in.BindRTCPWriter(l.writer)
	}
	l.inner.Store(&in)
	return in, nil
}

// BindRTCPReader returns a reader that reads through the inner
// interceptor's reader once there is one.
func (l *lazyInterceptor) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return &lazyRTCPReader{l: l, next: reader}
}

type lazyRTCPReader struct {
	l     *lazyInterceptor
	next  interceptor.RTCPReader
	once  sync.Once
	bound interceptor.RTCPReader
}

func (r *lazyRTCPReader) Read(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
	if in, _ := r.l.get(false); in != nil {
		r.once.Do(func() { r.bound = in.BindRTCPReader(r.next) })
		return r.bound.Read(b, a)
	}
	return r.next.Read(b, a)
}

// BindRTCPWriter keeps the connection's writer for the inner interceptor.
func (l *lazyInterceptor) BindRTCPWriter(writer interceptor.RTCPWriter) interceptor.RTCPWriter {
	l.mu.Lock()
	l.writer = writer
	l.mu.Unlock()
	if in, _ := l.get(false); in != nil {
		return in.BindRTCPWriter(writer)
	}
	return writer
}

func (l *lazyInterceptor) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	if in, _ := l.get(false); in != nil {
		return in.BindLocalStream(info, writer)
	}
	return writer
}

func (l *lazyInterceptor) UnbindLocalStream(info *interceptor.StreamInfo) {
	if in, _ := l.get(false); in != nil {
		in.UnbindLocalStream(info)
	}
}

// BindRemoteStream makes the inner interceptor for the first stream it
// wants. If making it fails, the stream goes without it.
func (l *lazyInterceptor) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	if !l.wants(info) {
		return reader
	}
	in, err := l.get(true)
	if err != nil || in == nil {
		return reader
	}
	return in.BindRemoteStream(info, reader)
}

func (l *lazyInterceptor) UnbindRemoteStream(info *interceptor.StreamInfo) {
	if in, _ := l.get(false); in != nil {
		in.UnbindRemoteStream(info)
	}
}

func (l *lazyInterceptor) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if in, _ := l.get(false); in != nil {
		return in.Close()
	}
	return nil
}

// wantsNACK: the stream negotiated generic NACK (RFC 4585), as pion's
// generator requires (interceptor nack.go streamSupportNack).
func wantsNACK(info *interceptor.StreamInfo) bool {
	for _, fb := range info.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			return true
		}
	}
	return false
}

// wantsTWCC: the stream carries the transport-wide sequence number
// extension, which pion's TWCC sender needs (twcc sender_interceptor.go).
func wantsTWCC(info *interceptor.StreamInfo) bool {
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == extTransportCC {
			return true
		}
	}
	return false
}

// anyStream: receiver reports are sent for every stream.
func anyStream(*interceptor.StreamInfo) bool { return true }
