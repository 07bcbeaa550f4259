// Stock yjs + y-websocket against the WedSync document socket, driven by
// tests/test_documents_yjs.py. Node 20 needs --experimental-websocket (global WebSocket).
// Args: JSON {serverUrl, room, token, insert, waitFor, forbidden}. Prints one JSON line per step.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const args = JSON.parse(process.argv[2])
const say = (o) => console.log(JSON.stringify(o))
// WedSync close codes 4500-4999 are terminal; y-websocket's default is 4400-4499
const shouldReconnect = (e) => e.code < 4500 || e.code >= 5000
const options = (token) => ({ protocols: ['wedsync.v1', `wedsync.token.${token}`], disableBc: true, shouldReconnect })

const timeout = setTimeout(() => { say({ error: 'timeout' }); process.exit(1) }, 30000)

if (args.forbidden) {
  const p = new WebsocketProvider(args.serverUrl, args.forbidden, new Y.Doc(), options(args.token))
  const closed = await new Promise((resolve) => p.on('closed', resolve))
  say({ forbidden: closed.code, reconnecting: p.shouldConnect })
  p.destroy()
}

const doc = new Y.Doc()
const text = doc.getText('content')
const provider = new WebsocketProvider(args.serverUrl, args.room, doc, options(args.token))
await new Promise((resolve) => provider.on('sync', (synced) => synced && resolve()))
say({ synced: text.toString() })
provider.awareness.setLocalStateField('user', { name: 'yjs in node' })
text.insert(0, args.insert)
await new Promise((resolve) => {
  const check = () => text.toString().includes(args.waitFor) && resolve()
  text.observe(check)
  check()
})
const peers = [...provider.awareness.getStates().entries()]
  .filter(([id]) => id !== doc.clientID).map(([, s]) => s)
// wait for the peer's awareness too (it may come after its edit)
while (!peers.length) {
  await new Promise((resolve) => provider.awareness.once('change', resolve))
  peers.push(...[...provider.awareness.getStates().entries()].filter(([id]) => id !== doc.clientID).map(([, s]) => s))
}
say({ text: text.toString(), peers, clientID: doc.clientID })
// hold on until told (stdin closes), so the other side sees our final state
process.stdin.resume()
process.stdin.on('end', () => { clearTimeout(timeout); provider.destroy(); process.exit(0) })
