const SLASH = 0x2F
const PLUS = 0x2B
const HASH = 0x23
const DOLLAR = 0x24

/**
 * Whether an MQTT topic filter matches a topic name [MQTT-4.7]. Runs per delivery for some
 * clients, so it compares in place: no split, no substring.
 */
export function topicMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] Filters starting with a wildcard do not match topics starting with '$'.
  const first = filter.charCodeAt(0)
  if (topic.charCodeAt(0) === DOLLAR && (first === PLUS || first === HASH)) return false
  const filterLength = filter.length
  const topicLength = topic.length
  let f = 0 // start of the current level in the filter
  let t = 0 // start of the current level in the topic; topicLength + 1 once the topic has no more
  for (;;) {
    // [MQTT-4.7.1-2] '#' matches this level, every level below and the parent level.
    if (filter.charCodeAt(f) === HASH) return true
    if (t > topicLength) return false
    let filterEnd = filter.indexOf('/', f)
    if (filterEnd === -1) filterEnd = filterLength
    let topicEnd = topic.indexOf('/', t)
    if (topicEnd === -1) topicEnd = topicLength
    // [MQTT-4.7.1-3] '+' matches exactly one level, an empty one included.
    if (!(filterEnd - f === 1 && filter.charCodeAt(f) === PLUS)) {
      if (filterEnd - f !== topicEnd - t) return false
      for (let i = 0; i < filterEnd - f; i++) if (filter.charCodeAt(f + i) !== topic.charCodeAt(t + i)) return false
    }
    f = filterEnd + 1
    t = topicEnd + 1
    if (f > filterLength) return t > topicLength
  }
}

/** Levels in a topic name or filter: one more than its '/' separators (aedes and qlobber count alike). */
export function topicLevels(topic: string): number {
  let levels = 1
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === SLASH) levels++
  return levels
}
