package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"entente.dev/entente/internal/netnstest"
)

// TestSealedConnectionQuality: the node rates each participant's connection
// from what it measures (loss and jitter of what arrives, receiver reports
// of what it sends, round trips) and tells each participant its own rating
// and those of the people it receives (LiveKit's ConnectionQualityUpdate,
// read here by Go SDK clients). The node is in agency A; bea joins from B
// over a clean link, cyd from C. Both are first rated excellent; then the
// router drops 15 % of C's packets each way, and the node rates cyd below
// excellent, which both hear; once the loss ends, cyd is rated excellent
// again. Times are logged, not checked.
func TestSealedConnectionQuality(t *testing.T) {
	netnstest.Require(t, "nft", "ss")
	top := netnstest.New(t, 3)
	nodeNS, cleanNS, lossyNS := top.Agencies[0], top.Agencies[1], top.Agencies[2]
	certFile, keyFile := writeCertificate(t, turnHost)
	_, keys := startFirewalledNode(t, nodeNS, certFile, keyFile)
	wsURL := fmt.Sprintf("ws://%s:%d", nodeNS.Addr, sealedHTTPPort)
	const room = "quality"
	bea := startSealedClient(t, &sealedAgency{ns: cleanNS}, wsURL, keys.Token(t, room, "bea"), "bea")
	cyd := startSealedClient(t, &sealedAgency{ns: lossyNS}, wsURL, keys.Token(t, room, "cyd"), "cyd")

	quality := func(c *sealedClient, of string) string { return c.state().Quality[of] }
	start := time.Now()
	eventually(t, 90*time.Second, "both rated excellent, by both", func() bool {
		return quality(bea, "bea") == "EXCELLENT" && quality(bea, "cyd") == "EXCELLENT" &&
			quality(cyd, "cyd") == "EXCELLENT" && quality(cyd, "bea") == "EXCELLENT"
	})
	t.Logf("clean links: both excellent after %s", time.Since(start).Round(time.Millisecond))

	top.Lose(t, lossyNS, 15)
	lossAt := time.Now()
	bad := []string{"GOOD", "POOR"}
	eventually(t, 90*time.Second, "cyd rated below excellent, by both", func() bool {
		return slices.Contains(bad, quality(cyd, "cyd")) && slices.Contains(bad, quality(bea, "cyd"))
	})
	t.Logf("15%% loss on C's link: cyd rated %s after %s; bea rated %s", quality(cyd, "cyd"),
		time.Since(lossAt).Round(time.Millisecond), quality(bea, "bea"))
	// Packets kept flowing: the rating is about a bad link, not a lost one.
	require := func(ok bool, msg string) {
		t.Helper()
		if !ok {
			t.Fatal(msg)
		}
	}
	require(bea.receiving("cyd", 2*time.Second), "bea still receives cyd")

	top.Repair(t, lossyNS)
	repairAt := time.Now()
	eventually(t, 90*time.Second, "cyd rated excellent again, by both", func() bool {
		return quality(cyd, "cyd") == "EXCELLENT" && quality(bea, "cyd") == "EXCELLENT"
	})
	t.Logf("loss ended: cyd excellent again after %s", time.Since(repairAt).Round(time.Millisecond))
}
