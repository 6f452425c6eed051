package matrix

import (
	"context"

	"entente.dev/entente/internal/store"
)

// StoreTxns stores appservice transactions in the node's database.
type StoreTxns struct{ st *store.Store }

// NewStoreTxns returns a TxnStore backed by st.
func NewStoreTxns(st *store.Store) *StoreTxns { return &StoreTxns{st: st} }

// ApplyTxn implements TxnStore with store.ApplyMatrixTxn, which records the
// transaction ID and its effects in one SQLite transaction.
func (s *StoreTxns) ApplyTxn(ctx context.Context, txnID string, fx TxnEffects) (bool, error) {
	txn := store.MatrixTxn{
		Rooms:       make([]store.MatrixRoom, 0, len(fx.Rooms)),
		Memberships: make([]store.MatrixMembership, 0, len(fx.Memberships)),
		CallMembers: make([]store.MatrixCallMember, 0, len(fx.CallMembers)),
	}
	for _, r := range fx.Rooms {
		txn.Rooms = append(txn.Rooms, store.MatrixRoom(r))
	}
	for _, m := range fx.Memberships {
		txn.Memberships = append(txn.Memberships, store.MatrixMembership{
			RoomID: m.RoomID, UserID: m.UserID, Membership: m.Membership, EventID: m.EventID, At: m.At,
		})
	}
	for _, c := range fx.CallMembers {
		txn.CallMembers = append(txn.CallMembers, store.MatrixCallMember(c))
	}
	return s.st.ApplyMatrixTxn(ctx, txnID, txn)
}
