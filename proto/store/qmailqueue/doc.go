// Package qmailqueue hands a message to a qmail-queue program (qmail's
// interface: the message on fd 0, the envelope on fd 1, the verdict in
// the exit status and, with notqmail, a custom reply on fd 6) and reads
// the qmail-queue envelope format. It is the Backend `serve
// --queue-program` stores through: K only after the program exited 0.
package qmailqueue
