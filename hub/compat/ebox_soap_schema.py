"""The hub's own schema of the EBoxMessage v1 requests it serves: structure, lengths and patterns.

Written for the hub from the interface's facts (element names, order, cardinalities and value types), for
the four operations it serves; the official schemas are not needed at run time. Tests prove that what the
official XSDs accept this one accepts too, and that it refuses what they refuse.

Request elements are in ``http://socialsecurity.be/eboxmessage/v1``, their content in
``http://socialsecurity.be/eboxmessage/types/v1`` (qualified); ``HealthCheckRequest`` is in
``http://services.fgov.be/monitoring/v1``.
"""

from __future__ import annotations

import functools

from lxml import etree

from hub.errors import ErrorCode, Rejected
from hub.safexml import element_path

EBOX_NS = "http://socialsecurity.be/eboxmessage/v1"
TYPES_NS = "http://socialsecurity.be/eboxmessage/types/v1"
MONITORING_NS = "http://services.fgov.be/monitoring/v1"

_TYPES = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns="{TYPES_NS}" targetNamespace="{TYPES_NS}"
  elementFormDefault="qualified">
  <xs:simpleType name="Len1to25"><xs:restriction base="xs:string"><xs:minLength value="1"/><xs:maxLength value="25"/>
    </xs:restriction></xs:simpleType>
  <xs:simpleType name="Cbe"><xs:restriction base="xs:string"><xs:pattern value="[0-9]{{10}}"/>
    </xs:restriction></xs:simpleType>
  <xs:simpleType name="Ssin"><xs:restriction base="xs:string"><xs:pattern value="[0-9]{{11}}"/>
    </xs:restriction></xs:simpleType>
  <xs:simpleType name="Nihii"><xs:restriction base="xs:string"><xs:pattern value="[0-9]{{8}}"/>
    </xs:restriction></xs:simpleType>
  <xs:simpleType name="Sub"><xs:restriction base="xs:string"><xs:maxLength value="50"/>
    <xs:pattern value="[A-Za-z0-9]+"/>
    </xs:restriction></xs:simpleType>
  <xs:simpleType name="Quality"><xs:restriction base="xs:string"><xs:minLength value="1"/><xs:maxLength value="125"/>
    </xs:restriction></xs:simpleType>
  <xs:simpleType name="Kind"><xs:restriction base="xs:string"><xs:enumeration value="ENTERPRISE"/>
    <xs:enumeration value="CITIZEN"/></xs:restriction></xs:simpleType>
  <xs:simpleType name="Text"><xs:restriction base="xs:string"><xs:minLength value="1"/></xs:restriction></xs:simpleType>
  <xs:group name="Audience"><xs:choice><xs:element name="QualityCode" type="Quality"/>
    <xs:element name="EboxType" type="Kind"/></xs:choice></xs:group>
  <xs:complexType name="Entity"><xs:choice>
    <xs:sequence><xs:element name="CompanyID" type="Cbe"/><xs:element name="SubentityId" type="Sub" minOccurs="0"/>
    </xs:sequence>
    <xs:element name="INSS" type="Ssin"/><xs:element name="NIHII" type="Nihii"/></xs:choice></xs:complexType>
  <xs:complexType name="Ids"><xs:sequence><xs:element name="Ticket" type="Len1to25"/>
    <xs:element name="Sequence" minOccurs="0"><xs:simpleType><xs:restriction base="xs:integer">
      <xs:minInclusive value="0"/><xs:maxInclusive value="99999"/></xs:restriction></xs:simpleType></xs:element>
  </xs:sequence></xs:complexType>
  <xs:complexType name="File"><xs:sequence>
    <xs:element name="Title"><xs:simpleType><xs:restriction base="Text"><xs:maxLength value="400"/></xs:restriction>
      </xs:simpleType></xs:element>
    <xs:element name="Content" type="xs:anyURI"/>
    <xs:element name="Digest" minOccurs="0"><xs:complexType><xs:sequence>
      <xs:element name="DigestMethod"><xs:simpleType><xs:restriction base="xs:string"><xs:enumeration value="SHA-1"/>
        <xs:enumeration value="SHA-256"/><xs:enumeration value="SHA-512"/></xs:restriction></xs:simpleType></xs:element>
      <xs:element name="DigestValue"><xs:simpleType><xs:restriction base="xs:base64Binary"><xs:minLength value="1"/>
        <xs:maxLength value="150"/></xs:restriction></xs:simpleType></xs:element>
    </xs:sequence></xs:complexType></xs:element>
    <xs:element name="DownloadFileName"><xs:simpleType><xs:restriction base="Text"><xs:maxLength value="80"/>
      </xs:restriction></xs:simpleType></xs:element>
    <xs:element name="MIME" type="Text" minOccurs="0"/>
  </xs:sequence></xs:complexType>
  <xs:simpleType name="Short"><xs:restriction base="Text"><xs:maxLength value="25"/></xs:restriction></xs:simpleType>
  <xs:complexType name="Publish"><xs:sequence>
    <xs:element name="MessageID" type="Ids"/>
    <xs:element name="SenderID" minOccurs="0"><xs:complexType><xs:sequence>
      <xs:element name="Application"><xs:simpleType><xs:restriction base="Text"><xs:maxLength value="150"/>
        </xs:restriction></xs:simpleType></xs:element>
      <xs:element name="Institution" type="Cbe"/></xs:sequence></xs:complexType></xs:element>
    <xs:element name="RecipientID" maxOccurs="5"><xs:complexType><xs:complexContent><xs:extension base="Entity">
      <xs:sequence><xs:group ref="Audience"/>
        <xs:element name="Person" minOccurs="0"><xs:complexType><xs:sequence><xs:element name="INSS" type="Ssin"/>
          <xs:element name="FirstName" type="Name"/><xs:element name="LastName" type="Name"/></xs:sequence>
        </xs:complexType></xs:element></xs:sequence></xs:extension></xs:complexContent></xs:complexType></xs:element>
    <xs:element name="MessageType"><xs:simpleType><xs:restriction base="xs:string"><xs:minLength value="6"/>
      <xs:maxLength value="80"/></xs:restriction></xs:simpleType></xs:element>
    <xs:element name="Document" type="File"/>
    <xs:element name="FreeInformation" minOccurs="0"><xs:complexType><xs:choice>
      <xs:element name="FreeText"><xs:simpleType><xs:restriction base="Text"><xs:maxLength value="5000"/>
        </xs:restriction></xs:simpleType></xs:element>
      <xs:element name="Table"><xs:complexType><xs:sequence>
        <xs:element name="Title"><xs:simpleType><xs:restriction base="Text"><xs:maxLength value="50"/></xs:restriction>
          </xs:simpleType></xs:element>
        <xs:element name="Row" maxOccurs="10"><xs:complexType><xs:sequence>
          <xs:element name="LeftCell"><xs:simpleType><xs:restriction base="Text"><xs:maxLength value="50"/>
            </xs:restriction></xs:simpleType></xs:element>
          <xs:element name="RightCell"><xs:simpleType><xs:restriction base="Text"><xs:maxLength value="150"/>
            </xs:restriction></xs:simpleType></xs:element></xs:sequence></xs:complexType></xs:element>
      </xs:sequence></xs:complexType></xs:element></xs:choice></xs:complexType></xs:element>
    <xs:element name="Meta" minOccurs="0" maxOccurs="10"><xs:complexType><xs:sequence>
      <xs:element name="Type" type="Short"/><xs:element name="Value" type="Short" maxOccurs="10"/></xs:sequence>
    </xs:complexType></xs:element>
    <xs:element name="Annex" type="File" minOccurs="0" maxOccurs="5"/>
    <xs:element name="EmailAddresses" minOccurs="0" maxOccurs="5"><xs:simpleType><xs:restriction base="xs:string">
      <xs:maxLength value="80"/><xs:pattern value="[A-Za-z0-9._%\\-]+@[A-Za-z0-9.\\-]+\\.[A-Za-z]{{2,4}}"/>
    </xs:restriction></xs:simpleType></xs:element>
    <xs:element name="IsRegistered" type="xs:boolean" minOccurs="0"/>
  </xs:sequence></xs:complexType>
  <xs:simpleType name="Name"><xs:restriction base="Text"><xs:maxLength value="100"/></xs:restriction></xs:simpleType>
  <xs:complexType name="HasAnEbox"><xs:sequence><xs:group ref="Audience"/>
    <xs:element name="EboxID" type="Entity" maxOccurs="1000"/></xs:sequence></xs:complexType>
  <xs:complexType name="Status"><xs:sequence><xs:group ref="Audience"/>
    <xs:element name="Message" maxOccurs="250"><xs:complexType><xs:sequence><xs:element name="EboxID" type="Entity"/>
      <xs:element name="MessageID" type="Ids"/></xs:sequence></xs:complexType></xs:element>
  </xs:sequence></xs:complexType>
</xs:schema>"""

_REQUESTS = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="{TYPES_NS}" targetNamespace="{EBOX_NS}"
  elementFormDefault="qualified">
  <xs:import namespace="{TYPES_NS}" schemaLocation="hub-ebox-types.xsd"/>
  <xs:element name="PublishEboxMessageRequest" type="t:Publish"/>
  <xs:element name="HasAnEboxRequest" type="t:HasAnEbox"/>
  <xs:element name="GetMessageStatusRequest" type="t:Status"/>
</xs:schema>"""


class _Resolver(etree.Resolver):
    def resolve(self, system_url, public_id, context):
        if system_url.endswith("hub-ebox-types.xsd"):
            return self.resolve_string(_TYPES, context)
        return None


@functools.cache
def _schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_Resolver())
    return etree.XMLSchema(etree.fromstring(_REQUESTS.encode(), parser))


def check(entry: etree._Element) -> None:
    """``SCHEMA_INVALID`` unless ``entry`` (a request element of the three data operations) is well formed."""
    schema = _schema()
    if schema.validate(entry):
        return
    error = schema.error_log.last_error
    message = error.message if error is not None else "the request does not match EBoxMessage v1"
    raise Rejected(
        ErrorCode.SCHEMA_INVALID,
        f"{message} (EBoxMessage v1, {etree.QName(entry).localname}).",
        path=element_path(entry),
    )
