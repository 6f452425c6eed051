package matrix

import (
	"errors"
	"io"
	"net/http"
)

// errAnswerTooLong means a homeserver's answer was longer than its caller
// allows.
var errAnswerTooLong = errors.New("answer too long")

// callHomeserver sends req with token as its bearer and reads at most max
// bytes of the answer, so that no homeserver answer costs the node more
// memory than the call expects. It returns the status and the body; the
// error is the request's, the read's, or errAnswerTooLong.
func callHomeserver(c *http.Client, req *http.Request, token string, max int64) (int, []byte, error) {
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if int64(len(body)) > max {
		return resp.StatusCode, nil, errAnswerTooLong
	}
	return resp.StatusCode, body, nil
}
