package rtc

import (
	"testing"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/stretchr/testify/require"
)

// countingInterceptor records what a lazy interceptor passes on.
type countingInterceptor struct {
	interceptor.NoOp
	writers, readers, remotes, closes int
}

func (c *countingInterceptor) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	c.writers++
	return w
}

func (c *countingInterceptor) BindRTCPReader(r interceptor.RTCPReader) interceptor.RTCPReader {
	c.readers++
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		return r.Read(b, a)
	})
}

func (c *countingInterceptor) BindRemoteStream(_ *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	c.remotes++
	return r
}

func (c *countingInterceptor) Close() error {
	c.closes++
	return nil
}

type countingFactory struct{ made []*countingInterceptor }

func (f *countingFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	c := &countingInterceptor{}
	f.made = append(f.made, c)
	return c, nil
}

// TestLazyInterceptor: the inner interceptor is made on the first wanted
// stream only, bound then to the connection's RTCP writer and readers,
// and closed with the connection; one made never exists after Close.
func TestLazyInterceptor(t *testing.T) {
	f := &countingFactory{}
	lazy, err := (&lazyFactory{inner: f, wants: wantsNACK}).NewInterceptor("")
	require.NoError(t, err)
	writer := interceptor.RTCPWriterFunc(func([]rtcp.Packet, interceptor.Attributes) (int, error) { return 0, nil })
	lazy.BindRTCPWriter(writer)
	reads := 0
	reader := lazy.BindRTCPReader(interceptor.RTCPReaderFunc(func([]byte, interceptor.Attributes) (int, interceptor.Attributes, error) {
		reads++
		return 0, nil, nil
	}))
	_, _, _ = reader.Read(nil, nil)
	audio := &interceptor.StreamInfo{MimeType: "audio/opus"}
	lazy.BindRemoteStream(audio, nil)
	require.Empty(t, f.made, "no stream with NACK yet")

	video := &interceptor.StreamInfo{MimeType: "video/VP8", RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}}
	lazy.BindRemoteStream(video, nil)
	lazy.BindRemoteStream(video, nil)
	require.Len(t, f.made, 1)
	in := f.made[0]
	require.Equal(t, 1, in.writers)
	require.Equal(t, 2, in.remotes)
	_, _, _ = reader.Read(nil, nil)
	_, _, _ = reader.Read(nil, nil)
	require.Equal(t, 1, in.readers, "the reader is bound once, when first read after")
	require.Equal(t, 3, reads)

	require.NoError(t, lazy.Close())
	require.Equal(t, 1, in.closes)

	// Closed before any wanted stream: nothing is made afterwards.
	f2 := &countingFactory{}
	lazy2, err := (&lazyFactory{inner: f2, wants: anyStream}).NewInterceptor("")
	require.NoError(t, err)
	require.NoError(t, lazy2.Close())
	lazy2.BindRemoteStream(video, nil)
	require.Empty(t, f2.made)
}
