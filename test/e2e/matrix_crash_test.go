package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// nodeProc is a restart of a node's binary with the node's configuration
// and data directory.
type nodeProc struct {
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan error
}

// restartNode starts the binary again with n's configuration. It is
// stopped (SIGTERM, then SIGKILL) when t ends unless killed before.
func restartNode(t *testing.T, n *Node) *nodeProc {
	t.Helper()
	p := &nodeProc{logs: &lockedBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(ententeBinary(t), "--config", n.ConfigPath)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, p.cmd.Start())
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("restarted entente did not stop within 15 s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("restarted entente log:\n%s", p.logs.tail(100))
		}
	})
	return p
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *nodeProc) kill() {
	_ = p.cmd.Process.Kill()
	err := <-p.exited
	p.exited <- err // for the cleanup
}

// crashTxn is an appservice transaction big enough (members of its room)
// that parsing and storing it take a few milliseconds: time for a kill to
// land on either side of the commit.
func crashTxn(t *testing.T, roomID, server string, members int, extra ...map[string]any) []byte {
	t.Helper()
	events := make([]map[string]any, 0, members+len(extra))
	now := time.Now().UnixMilli()
	for i := range members {
		u := fmt.Sprintf("@member%04d:%s", i, server)
		events = append(events, map[string]any{
			"type": "m.room.member", "room_id": roomID, "sender": u, "state_key": u,
			"event_id": fmt.Sprintf("$%s-m%d", strings.TrimPrefix(roomID, "!"), i), "origin_server_ts": now,
			"content": map[string]any{"membership": "join", "displayname": strings.Repeat("n", 64)},
		})
	}
	events = append(events, extra...)
	b, err := json.Marshal(map[string]any{"events": events})
	require.NoError(t, err)
	return b
}

func memberEvent(roomID, userID, membership, eventID string) map[string]any {
	return map[string]any{
		"type": "m.room.member", "room_id": roomID, "sender": userID, "state_key": userID,
		"event_id": eventID, "origin_server_ts": time.Now().UnixMilli(),
		"content": map[string]any{"membership": membership},
	}
}

// putTxnRetry sends a transaction as a homeserver retries one: until the
// node answers.
func (m *matrixNode) putTxnRetry(t *testing.T, txnID string, body []byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, err := http.NewRequest(http.MethodPut, m.asURL+"/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+m.reg.ServerToken)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, "transaction %s", txnID)
			return
		}
		require.True(t, time.Now().Before(deadline), "the node's appservice did not come back: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
}

// sendTxn PUTs a transaction as the homeserver does and says what it saw:
// "status N" or "no answer".
func sendTxn(asURL, hsToken, txnID string, body []byte) string {
	req, err := http.NewRequest(http.MethodPut, asURL+"/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+hsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "no answer"
	}
	resp.Body.Close()
	return fmt.Sprintf("status %d", resp.StatusCode)
}

// TestMatrixCrashMidTransaction SIGKILLs the node between receiving an
// appservice transaction and answering it, at delays chosen so that the
// kill lands before the commit in some rounds and after it in others, then
// restarts it on the same data directory and sends the transaction again,
// as the homeserver does with one it saw no answer for. Each round's
// effects must be there exactly once: applied, and not applied again by a
// late duplicate sent after a newer transaction.
func TestMatrixCrashMidTransaction(t *testing.T) {
	m := startMatrixNode(t, matrixNodeOptions{withoutDendrite: true})
	db := storeDB(t, m.DataDir)
	const server, members = "hs.crash.test", 2000
	bob := "@bob:" + server
	// logs and kill address whichever process is current.
	logs, kill := m.Node.logs.String, func() { _ = m.Node.cmd.Process.Kill() }
	// Calibration: how long from the node logging a transaction's receipt
	// to its answer, for one of the size used below.
	var took time.Duration
	for i := range 3 {
		roomID := fmt.Sprintf("!calibrate%d:%s", i, server)
		mark := len(logs())
		body := crashTxn(t, roomID, server, members)
		done := make(chan time.Time, 1)
		go func() {
			if sendTxn(m.asURL, m.reg.ServerToken, "calibrate-"+strconv.Itoa(i), body) != "status 200" {
				done <- time.Time{}
				return
			}
			done <- time.Now()
		}()
		for !strings.Contains(logs()[mark:], "transaction received") {
			time.Sleep(200 * time.Microsecond)
		}
		seen := time.Now()
		answered := <-done
		require.False(t, answered.IsZero(), "calibration transaction %d not acknowledged", i)
		took = max(took, answered.Sub(seen))
	}
	t.Logf("a %d-event transaction is answered %v after the node logs its receipt", members+1, took.Round(time.Millisecond))
	// The first rounds kill right away and after 1.5 times that; the
	// others bisect between the longest delay that killed before the
	// commit and the shortest that killed after it, to get as close as
	// the machine allows to the window between commit and answer.
	const rounds = 10
	lo, hi := time.Duration(0), took*3/2
	outcomes := map[string]int{}
	for round := range rounds {
		delay := (lo + hi) / 2
		switch round {
		case 0:
			delay = 0
		case 1:
			delay = hi
		}
		roomID := fmt.Sprintf("!crash%d:%s", round, server)
		txnA, txnB := fmt.Sprintf("crash-%d-a", round), fmt.Sprintf("crash-%d-b", round)
		// A: everyone joins, Bob leaves. B (later): Bob is back.
		bodyA := crashTxn(t, roomID, server, members, memberEvent(roomID, bob, "leave", fmt.Sprintf("$leave%d", round)))
		bodyB := crashTxn(t, roomID, server, 0, memberEvent(roomID, bob, "join", fmt.Sprintf("$join%d", round)))

		// Send A and kill the node once it has logged receiving it.
		mark := len(logs())
		sent := make(chan string, 1) // what the homeserver saw
		go func() { sent <- sendTxn(m.asURL, m.reg.ServerToken, txnA, bodyA) }()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(logs()[mark:], "txn_id="+txnA) || !strings.Contains(logs()[mark:], "transaction received") {
			require.True(t, time.Now().Before(deadline), "round %d: the node never logged receiving %s", round, txnA)
			time.Sleep(200 * time.Microsecond)
		}
		time.Sleep(delay)
		kill()
		answer := <-sent
		committed := countRows(t, db, `SELECT count(*) FROM appservice_txns WHERE txn_id = ?`, txnA) == 1
		outcome := "before the commit"
		switch {
		case committed && answer == "status 200":
			outcome = "after the answer"
		case committed:
			outcome = "after the commit, before the answer"
		case answer == "status 200":
			t.Fatalf("round %d: acknowledged but not committed", round)
		}
		outcomes[outcome]++
		if committed {
			hi = min(hi, delay)
		} else {
			lo = max(lo, delay)
		}
		t.Logf("round %d: killed %v after \"transaction received\": %s (homeserver saw: %s)", round,
			delay.Round(10*time.Microsecond), outcome, answer)

		// Restart on the same data; the homeserver retries A, then sends B,
		// then (a late duplicate) A again.
		p := restartNode(t, m.Node)
		logs, kill = p.logs.String, p.kill
		m.putTxnRetry(t, txnA, bodyA)
		require.Equal(t, "leave", membershipOf(t, db, roomID, bob), "round %d: A applied", round)
		m.putTxnRetry(t, txnB, bodyB)
		m.putTxnRetry(t, txnA, bodyA)

		require.Equal(t, "join", membershipOf(t, db, roomID, bob), "round %d: the late duplicate of A changed nothing", round)
		require.Equal(t, members, countRows(t, db, `SELECT count(*) FROM matrix_memberships WHERE room_id = ? AND user_id != ?`, roomID, bob))
		require.Equal(t, members, countRows(t, db, `SELECT count(*) FROM matrix_memberships WHERE room_id = ? AND membership = 'join' AND user_id != ?`, roomID, bob))
		require.Equal(t, 2, countRows(t, db, `SELECT count(*) FROM appservice_txns WHERE txn_id IN (?, ?)`, txnA, txnB))
	}
	t.Logf("kills by outcome: %v; each round's effects applied exactly once", outcomes)
	require.Equal(t, 3+2*rounds, countRows(t, db, `SELECT count(*) FROM appservice_txns`))
}
