/** Whether an MQTT topic filter matches a topic name [MQTT-4.7]. */
export function topicMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] Filters starting with a wildcard do not match topics starting with '$'.
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true // [MQTT-4.7.1-2] also matches the parent level
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}
