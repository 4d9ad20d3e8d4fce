// sockjs-go v3 echo on 127.0.0.1:PORT, /echo (its webecho example's
// handler), with raw WebSockets on as well: /echo/websocket.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/igm/sockjs-go/v3/sockjs"
)

func main() {
	port := "0"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	opts := sockjs.DefaultOptions
	opts.RawWebsocket = true
	http.Handle("/echo/", sockjs.NewHandler("/echo", opts, echo))
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, nil))
}

func echo(session sockjs.Session) {
	for {
		msg, err := session.Recv()
		if err != nil {
			return
		}
		if session.Send(msg) != nil {
			return
		}
	}
}
