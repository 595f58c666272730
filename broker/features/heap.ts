import v8 from 'node:v8'

/*
 * How much memory an idle connection costs is decided as much by V8's heap sizing as by what a
 * connection holds. A connection keeps ≈ 6 KiB of live objects (aedes' client, the socket, the
 * parser), but after a burst of connects V8 grows the old generation by a factor of up to 4 of
 * what survived its last full collection, and those pages stay resident: ≈ 13 KiB of RSS per
 * idle connection at 10,000 connections, however long they stay idle. Growing by 20 % keeps the
 * heap within reach of its live size (≈ 7–8 KiB of RSS per connection) and costs nothing
 * measurable per message: a broker in steady state allocates mostly short-lived objects, which
 * the young generation collects whatever this factor.
 *
 * `heap-growing-percent` is a heuristic V8 reads at each full collection, so setting it at
 * start-up, before the listeners open, applies to the whole life of the node. The node command
 * line (`node --heap-growing-percent=20`) would do the same where the process is started by hand.
 */

/** Old generation growth after a full GC, percent of the surviving size. */
export const HEAP_GROWING_PERCENT = 20

let tuned = false

export function tuneHeapGrowth(): void {
  if (tuned) return
  tuned = true
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`)
}
