package netnstest

import (
	"fmt"
	"os/exec"
	"testing"
)

// lossTable is the router's nftables table that drops packets at random.
const lossTable = "netnstest_loss"

// Lose makes the router drop, at random, percent of the packets a's hosts
// send and percent of those they are sent (nftables numgen, in the
// router's forward path: this machine's kernel has no netem). It replaces
// an earlier setting; Repair ends it. The test fails if nft refuses.
func (top *Topology) Lose(t testing.TB, a *Agency, percent int) {
	t.Helper()
	top.Repair(t, a)
	table := fmt.Sprintf("%s_%d", lossTable, a.Index)
	for _, rule := range []string{
		"add table inet " + table,
		"add chain inet " + table + " lossy { type filter hook forward priority 0 ; policy accept ; }",
		fmt.Sprintf("add rule inet %s lossy ip saddr %s numgen random mod 100 < %d counter drop", table, a.Addr, percent),
		fmt.Sprintf("add rule inet %s lossy ip daddr %s numgen random mod 100 < %d counter drop", table, a.Addr, percent),
	} {
		top.run(t, "ip", "netns", "exec", top.Router, "nft", rule)
	}
	t.Logf("link of %s: %d%% of packets lost each way", a.Name, percent)
}

// Repair ends a's loss (Lose); a link without it is left as it is.
func (top *Topology) Repair(t testing.TB, a *Agency) {
	t.Helper()
	table := fmt.Sprintf("%s_%d", lossTable, a.Index)
	_ = exec.Command("ip", "netns", "exec", top.Router, "nft", "delete", "table", "inet", table).Run()
}
