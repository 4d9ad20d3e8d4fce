// sockjs-node 0.3.24 echo on 127.0.0.1:PORT, /echo (as its README's echo example).
const http = require('http');
const sockjs = require('sockjs');
const echo = sockjs.createServer({ log: () => {} });
echo.on('connection', (conn) => conn.on('data', (m) => conn.write(m)));
const server = http.createServer();
echo.installHandlers(server, { prefix: '/echo' });
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log('listening on http://127.0.0.1:' + server.address().port);
});
