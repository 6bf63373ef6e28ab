#!/usr/bin/env bash
# Fetches Apache Kafka (KRaft) jars from Maven Central with Maven, plus a log4j2 backend; prints the jar folder.
source "$(dirname "$0")/lib.sh"
out="$CRBRIDGE_CACHE/kafka-$KAFKA_VERSION"
# .complete-2: the recipe revision (2 = SLF4J binding chosen to match the resolved slf4j-api).
if [[ -f "$out/.complete-2" ]]; then echo "$out/jars"; exit 0; fi
require java "install a Java 17+ runtime ('apt-get install openjdk-17-jre-headless')"
require mvn "install Apache Maven ('apt-get install maven')"
rm -rf "$out/jars"; mkdir -p "$out/jars"
logf="$out/fetch.log"; : >"$logf"
log "kafka $KAFKA_VERSION: resolving jars from Maven Central (log: $logf)"
cat >"$out/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>crbridge.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
run_logged "$logf" mvn -B -q -f "$out/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/jars"
ls "$out/jars"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka jars missing after Maven resolution (log: $logf)"
# The pom has no logging backend: add the log4j2 SLF4J binding matching the slf4j-api Kafka resolved
# (log4j-slf4j-impl for SLF4J 1.7, log4j-slf4j2-impl for 2.x), else Kafka logs nothing.
if ls "$out/jars"/slf4j-api-1.*.jar >/dev/null 2>&1; then binding=log4j-slf4j-impl; else binding=log4j-slf4j2-impl; fi
run_logged "$logf" mvn -B -q -f "$out/pom.xml" dependency:copy \
  -Dartifact="org.apache.logging.log4j:$binding:$LOG4J_VERSION" -DoutputDirectory="$out/jars"
touch "$out/.complete-2"
log "kafka $KAFKA_VERSION: done ($(ls "$out/jars" | wc -l) jars)"
echo "$out/jars"
