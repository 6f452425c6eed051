package media

import "sync"

// spinMutex is a plain mutex; the name marks locks that are held only for a
// few instructions on the packet path and never across I/O.
type spinMutex struct{ sync.Mutex }
